#!/bin/bash
# usage: off_run.sh <dets dir (from ss_run)> <out dir>: engine only, on saved detections
src=$1; out=$2; mkdir -p $out
for d in /tmp/ssall/*/; do t=$(basename $d)
  /work/main/target/release/examples/offline_replay $d/manifest.json $src/$t.det.jsonl $out/$t.ev.jsonl 2>>$out/log.txt || echo FAIL $t
done
python3 /tmp/agg/ss_eval.py /tmp/ssall $out
