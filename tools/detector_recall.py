"""Recall and time per frame of the person detectors on the hand-labelled frames of vtest.avi.

    .venv/bin/python tools/detector_recall.py [--video data/vtest.avi] [--labels tests/fixtures/vtest_people.json]
        [--iou 0.4] [--ssdlite PATH.onnx] [--thresholds 0.3,0.5] [--json out.json]

HOG runs at the runtime's defaults; SSDLite (converted by tools/convert_ssdlite.py, found in the
cache unless --ssdlite names it) at each score threshold given. Prints one table row per detector.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from hmr_trt.runtime.detect import HogPeopleDetector, SsdLiteDetector, cached_ssdlite
from hmr_trt.runtime.detect_eval import read_labels, score_detector
from hmr_trt.runtime.video import frames_at

ROOT = Path(__file__).resolve().parent.parent


def main(argv: list | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--video", type=Path, default=ROOT / "data" / "vtest.avi")
    parser.add_argument("--labels", type=Path, default=ROOT / "tests" / "fixtures" / "vtest_people.json")
    parser.add_argument("--iou", type=float, default=0.4)
    parser.add_argument("--ssdlite", type=Path, default=None)
    parser.add_argument("--thresholds", default="0.3,0.5")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    labels = read_labels(args.labels)
    frames = frames_at(args.video, set(labels))
    scores = [score_detector("hog", HogPeopleDetector().detect, frames, labels, args.iou)]
    ssdlite = args.ssdlite or cached_ssdlite()
    if ssdlite is None:
        print("SSDLite not converted (python tools/convert_ssdlite.py): HOG only", file=sys.stderr)
    else:
        for thr in (float(t) for t in args.thresholds.split(",")):
            det = SsdLiteDetector(ssdlite, score_threshold=thr)
            scores.append(score_detector(f"ssdlite@{thr}", det.detect, frames, labels, args.iou))
    print(f"{len(labels)} frames, {sum(len(v) for v in labels.values())} labelled people, IoU >= {args.iou}")
    print(f"{'detector':<14} {'recall':>7} {'found':>9} {'unmatched':>9} {'ms/frame':>9}  per frame (found/labelled)")
    for s in scores:
        per = " ".join(f"{f}:{a}/{b}" for f, (a, b, _) in s.per_frame.items())
        print(f"{s.name:<14} {s.recall:>7.2f} {s.found:>4}/{s.labelled:<4} {s.unmatched_detections:>9} "
              f"{s.ms_per_frame:>9.1f}  {per}")
    if args.json:
        args.json.write_text(json.dumps([s.as_dict() for s in scores], indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
