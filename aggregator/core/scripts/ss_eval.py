#!/usr/bin/env python3
"""Aggregate ShotSpotter replay results: usage ss_eval.py <scenarios dir> <results dir>
results dir holds <test>.ev.jsonl (final events). Matching as truth_eval.rs:
greedy by 3-D distance among pairs with |origin dt| <= 2 s."""
import json, math, os, sys, statistics
from datetime import datetime
R = 6371000.0
def t_ns(s):
    s = s.rstrip('Z'); base, _, frac = s.partition('.')
    dt = datetime.fromisoformat(base)
    import calendar
    return calendar.timegm(dt.timetuple()) * 10**9 + int((frac + '000000000')[:9])
def enu(o, lat, lon, alt):
    return ((lon - o[1]) * math.pi / 180 * R * math.cos(o[0] * math.pi / 180),
            (lat - o[0]) * math.pi / 180 * R, alt - o[2])
sdir, rdir = sys.argv[1], sys.argv[2]
herr, ghosts, ntruth, located, per = [], [], 0, 0, []
for test in sorted(os.listdir(sdir)):
    m = json.load(open(os.path.join(sdir, test, 'manifest.json')))
    p = os.path.join(rdir, test + '.ev.jsonl')
    if not os.path.exists(p):
        print('missing', test); continue
    evs = [json.loads(l) for l in open(p) if l.strip()]
    n0 = m['nodes'][0]; o = (n0['lat'], n0['lon'], n0['alt_m'])
    truth = m.get('truth') or []
    tp = [enu(o, t['lat'], t['lon'], t['alt_m']) for t in truth]
    ep = [enu(o, e['lat'], e['lon'], e['alt_m']) for e in evs]
    pairs = []
    for ti, t in enumerate(truth):
        for ei, e in enumerate(evs):
            if abs(t_ns(e['origin_utc']) - t_ns(t['time_utc'])) <= 2e9:
                pairs.append((math.dist(tp[ti], ep[ei]), ti, ei))
    pairs.sort()
    tu, eu = {}, set()
    for _, ti, ei in pairs:
        if ti not in tu and ei not in eu:
            tu[ti] = ei; eu.add(ei)
    errs = []
    for ti in range(len(truth)):
        ntruth += 1
        if ti in tu:
            located += 1
            a, b = tp[ti], ep[tu[ti]]
            errs.append(math.hypot(a[0] - b[0], a[1] - b[1]))
    herr += errs
    ghosts.append(len(evs) - len(eu))
    per.append((test, len(m['nodes']), len(truth), len(errs), len(evs) - len(eu), statistics.median(errs) if errs else float('nan')))
if '-v' in sys.argv:
    for r in per: print('%-14s nodes %d truth %d located %d ghosts %3d median_h %.1f' % r)
print('tests %d, truth shots %d, located %d (%.0f%%)' % (len(per), ntruth, located, 100 * located / max(ntruth, 1)))
w15 = sum(e <= 15 for e in herr) / max(ntruth, 1); w25 = sum(e <= 25 for e in herr) / max(ntruth, 1)
print('median horizontal error %.1f m (located shots); within 15 m %.0f%%, within 25 m %.0f%% (of all shots)' % (statistics.median(herr) if herr else float('nan'), 100 * w15, 100 * w25))
print('ghosts: total %d, mean %.2f / test, median %.1f / test, tests with 0 ghosts %d' % (sum(ghosts), statistics.mean(ghosts), statistics.median(ghosts), sum(g == 0 for g in ghosts)))
