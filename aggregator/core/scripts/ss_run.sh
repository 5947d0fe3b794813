#!/bin/bash
# usage: ss_run.sh <blastnet binary> <results dir>
bin=$1; out=$2; mkdir -p $out
for d in /tmp/ssall/*/; do t=$(basename $d)
  $bin replay $d --events-out $out/$t.ev.jsonl --detections-out $out/$t.det.jsonl > $out/$t.log 2>&1 || echo "FAIL $t"
done
python3 /tmp/agg/ss_eval.py /tmp/ssall $out -v
