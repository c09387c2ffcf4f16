"""Images of every size: training speed and peak memory per input size, the import of a folder of
JPEGs, and a set larger than memory taken through the pipeline's own steps. Printed as JSON.

    .venv/bin/python benchmarks/images.py                        # input sizes, a 6,000-JPEG import
    .venv/bin/python benchmarks/images.py --large 200000         # and 200,000 128x128x3 JPEGs through
                                                                 # import, clean, validate, split, view, one epoch
    .venv/bin/python benchmarks/images.py --large 200000 --workdir /data/bench   # where the set is written
    .venv/bin/python benchmarks/images.py --large 200000 --record  # and rewrite docs/results.md's figures

Every measurement runs in a child process of its own, so each peak resident set size (the kernel's
ru_maxrss of that process) is that step's alone. The pictures are the generated colour set
(granular/demo/colours.py): a bar, lying or standing, in one of three colours.

- `sizes`: one network of the `train` section's defaults trained on 4,096 pictures held in memory,
  at 28x28x1, 32x32x3, 64x64x3 and 128x128x3: training images/s (the second epoch, the first
  warms up) and the child's peak RSS.
- `import`: a folder of 128x128 JPEGs decoded into the training size (granular's folder source,
  to a file a block at a time): pictures/s and peak RSS.
- `large`: a project of --large pictures, 128x128x3 JPEGs, run stage by stage with
  `python -m granular.pipeline.stages` (the commands DVC runs): each stage's seconds and peak RSS,
  the training's images/s, and the sizes on disk of the pictures and of the clean images.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

SHAPES = ((28, 28, 1), (32, 32, 3), (64, 64, 3), (128, 128, 3))
SPEED_IMAGES = 4096
IMPORT_IMAGES = 6000


def _run_child(args: list[str], cwd: Path | None = None) -> dict:
    """Run a child process to its end: its seconds, peak RSS (GiB) and standard output."""
    started = time.perf_counter()
    child = subprocess.Popen(args, cwd=cwd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = child.stdout.read()
    _, status, usage = os.wait4(child.pid, 0)
    child.returncode = os.waitstatus_to_exitcode(status)
    if child.returncode:
        raise RuntimeError(f"{' '.join(map(str, args))} failed ({child.returncode}):\n{output[-3000:]}")
    return {"seconds": round(time.perf_counter() - started, 1), "peak_rss_gib": round(usage.ru_maxrss / 2**20, 3),
            "output": output}


def _child_speed(shape: tuple[int, ...]) -> None:
    """Train two epochs on SPEED_IMAGES generated pictures of `shape`; print the second's images/s."""
    import numpy as np

    from granular.config import TrainConfig
    from granular.demo import colours
    from granular.nn.device import select_runtime
    from granular.nn.inputs import Pixels
    from granular.nn.train import fit

    rng = np.random.default_rng(0)
    labels = np.arange(SPEED_IMAGES) % len(colours.fine_classes())
    images = np.stack([colours.picture(label, shape[0], rng) for label in labels])
    if shape[2] == 1:
        images = images.mean(axis=3).astype(np.uint8)
    config = TrainConfig(epochs=2, tta=False)
    runtime = select_runtime(config.threads, 0, config.precision)
    history = []
    fit(Pixels(images), labels, Pixels(images[:512]), labels[:512], len(colours.fine_classes()), config, runtime,
        on_epoch=history.append, warn=lambda message: None)
    print(json.dumps({"images_per_s": round(history[-1]["images_per_s"]), "device": str(runtime.device),
                      "precision": str(runtime.autocast_dtype or "fp32")}))


def _child_import(folder: Path, scratch: Path) -> None:
    """Decode every picture of `folder` to 128x128 colour, into a file in `scratch`."""
    from granular.demo import colours
    from granular.modalities.images.fit import ImageFit
    from granular.modalities.images.sources import load_raw

    names = [fine for fine, _ in colours.fine_classes()]
    started = time.perf_counter()
    raw = load_raw("folder", folder, names, ImageFit((128, 128), color="rgb"), scratch)
    seconds = time.perf_counter() - started
    print(json.dumps({"pictures": len(raw), "pictures_per_s": round(len(raw) / seconds)}))


def _last_json(output: str) -> dict:
    return json.loads([line for line in output.splitlines() if line.startswith("{")][-1])


def _sizes() -> list[dict]:
    rows = []
    for shape in SHAPES:
        child = _run_child([sys.executable, __file__, "--child-speed", "x".join(map(str, shape))])
        rows.append({"input": "x".join(map(str, shape)), **_last_json(child["output"]),
                     "peak_rss_gib": child["peak_rss_gib"]})
        print(json.dumps(rows[-1]), file=sys.stderr, flush=True)
    return rows


def _pictures(folder: Path, count: int) -> Path:
    from granular.demo import colours

    per_class = -(-count // len(colours.fine_classes()))
    if not (folder / "taxonomy.yaml").is_file():
        colours.generate(folder, per_class=per_class, size=128, suffix=".jpg", workers=os.cpu_count() or 1)
    return folder


def _import(folder: Path, scratch: Path) -> dict:
    child = _run_child([sys.executable, __file__, "--child-import", str(folder), "--scratch", str(scratch)])
    return {**_last_json(child["output"]), "seconds": child["seconds"], "peak_rss_gib": child["peak_rss_gib"]}


def _disk_size(path: Path) -> float:
    files = [path] if path.is_file() else [p for p in path.rglob("*") if p.is_file()]
    return round(sum(p.stat().st_size for p in files) / 2**30, 2)


LARGE_PARAMS = """data: {source: {format: folder, path: pictures, color: rgb}}
validate: {image_shape: [128, 128]}
taxonomy: pictures/taxonomy.yaml
views: {fine-128: {level: fine, resolution: 128}}
train: {epochs: 1}
"""
STAGES = (["import-raw"], ["clean"], ["validate"], ["split"], ["view", "--view", "fine-128"],
          ["train", "--view", "fine-128"])


def _large(count: int, workdir: Path) -> dict:
    project = workdir / "project"
    project.mkdir(parents=True, exist_ok=True)
    pictures = _pictures(project / "pictures", count)
    (project / "params.yaml").write_text(LARGE_PARAMS)
    out = {"pictures": sum(1 for _ in pictures.rglob("*.jpg")), "pictures_on_disk_gib": _disk_size(pictures)}
    for stage in STAGES:
        child = _run_child([sys.executable, "-m", "granular.pipeline.stages", *stage], cwd=project)
        record = {"seconds": child["seconds"], "peak_rss_gib": child["peak_rss_gib"]}
        if stage[0] == "train":
            epoch = [json.loads(line) for line in child["output"].splitlines() if line.startswith('{"epoch"')][-1]
            record |= {"images_per_s": round(epoch["images_per_s"]), "val_accuracy": round(epoch["val_accuracy"], 4)}
        out[stage[0]] = record
        print(json.dumps({stage[0]: record}), file=sys.stderr, flush=True)
    out["clean_images_on_disk_gib"] = _disk_size(project / "data" / "interim" / "clean.npz")
    out["peak_rss_gib"] = max(out[stage[0]]["peak_rss_gib"] for stage in STAGES)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="benchmarks/images.py", description=__doc__.splitlines()[0])
    parser.add_argument("--large", type=int, default=0, help="pictures of the set larger than memory (0: none)")
    parser.add_argument("--workdir", type=Path, help="where the pictures and the project go (default: a temporary folder)")
    parser.add_argument("--record", action="store_true", help="also write the figures into docs/results.md")
    parser.add_argument("--child-speed", help=argparse.SUPPRESS)
    parser.add_argument("--child-import", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--scratch", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child_speed:
        _child_speed(tuple(int(side) for side in args.child_speed.split("x")))
        return 0
    if args.child_import:
        _child_import(args.child_import, args.scratch)
        return 0
    import record  # benchmarks/record.py

    if args.record:
        for section in ("images", "images-large") if args.large else ("images",):
            record.check(section)
    with tempfile.TemporaryDirectory() as temporary:
        workdir = args.workdir or Path(temporary)
        report = {"machine": record.machine(), "sizes": _sizes()}
        folder = _pictures(workdir / "import", IMPORT_IMAGES) if not args.large else _pictures(
            workdir / "project" / "pictures", args.large)
        scratch = workdir / "scratch"
        scratch.mkdir(parents=True, exist_ok=True)
        report["import"] = _import(folder, scratch)
        (scratch / "decoded.npy").unlink(missing_ok=True)
        if args.large:
            report["large"] = _large(args.large, workdir)
    print(json.dumps(report, indent=2))
    if args.record:
        record_figures(report)
    return 0


def record_figures(report: dict, **where) -> None:
    """Write the figures into docs/results.md: the input sizes with the import, and the large set's stages."""
    import record  # benchmarks/record.py

    imported = {"input": f"import: {report['import']['pictures']:,} JPEGs, 128x128x3",
                "pictures_per_s": report["import"]["pictures_per_s"], "peak_rss_gib": report["import"]["peak_rss_gib"]}
    record.record("images", [*report["sizes"], imported], **where)
    if "large" in report:
        large = report["large"]
        stages = [{"stage": stage[0], **large[stage[0]]} for stage in STAGES]
        stages.append({"stage": f"{large['pictures']:,} pictures: {large['pictures_on_disk_gib']} GiB of JPEGs, "
                                f"{large['clean_images_on_disk_gib']} GiB clean", "peak_rss_gib": large["peak_rss_gib"]})
        record.record("images-large", stages, **where)


if __name__ == "__main__":
    sys.exit(main())
