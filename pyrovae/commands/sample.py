"""``pyrovae sample RUN_DIR``: draw new data points from the prior."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import add_run_arguments, load_run_of, positive_int

SUFFIXES = (".png", ".npy", ".txt")


def _out_path(text: str) -> Path:
    path = Path(text)
    if path.suffix.lower() not in SUFFIXES:
        raise argparse.ArgumentTypeError(f"--out must end in .png (an image grid), .npy (the array) or .txt "
                                         f"(one sample a line, for a text model), got {text!r}")
    return path


def add_parser(sub):
    p = sub.add_parser("sample", help="draw new data points from the prior, as a PNG grid, a .npy array or "
                                      "(a text model) a .txt file")
    add_run_arguments(p)
    p.add_argument("-n", "--num", type=positive_int, default=64, help="number of samples (default 64)")
    p.add_argument("--out", type=_out_path, help="FILE.png (a grid), FILE.npy (float32 array (n, *data_shape)) or "
                   "FILE.txt (one sample a line, for a model that shows its data as text); "
                   "default RUN_DIR/plots/samples-seedS.png (.txt for a text model)")
    p.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives the same samples (default 0)")
    p.add_argument("--label", type=int, default=None,
                   help="for a model conditioned on class labels (a field y and num_classes): draw every sample of this class")
    p.add_argument("--draw", action="store_true",
                   help="draw x ~ p(x|z) instead of showing the decoder mean E[x|z]")
    p.set_defaults(func=cmd_sample)


def cmd_sample(args) -> int:
    import numpy as np

    from ..errors import DataError, RunDirError
    from ..models.protocol import capability, has_capability, require_command
    from ..report.latents import class_labels, draw_samples
    from ..report.plots import image_shape_problem, samples_figure, save_figure

    vae, _, _ = load_run_of(args)
    require_command(vae, "sample")
    text = has_capability(vae, "to_text")
    suffix = args.out.suffix.lower() if args.out else (".txt" if text else ".png")
    # what the file needs is checked before anything is drawn
    if suffix == ".txt":
        to_text = capability(vae, "to_text", "pyrovae sample --out FILE.txt")
    elif suffix == ".png":
        if text:
            raise DataError("this model shows its data as text, not images: write --out FILE.txt (or FILE.npy)")
        problem = image_shape_problem(capability(vae, "data_shape", "a PNG of samples"))
        if problem:
            raise DataError(f"{problem}; write the samples as an array with --out FILE.npy")
        value_range = capability(vae, "likelihood", "a PNG of samples (its value range)").value_range
    fields = {} if args.label is None else {"y": class_labels(vae, args.label, args.num)}
    samples = draw_samples(vae, args.num, seed=args.seed, mean=not args.draw, **fields).cpu()
    stem = "samples" if args.label is None else f"samples-label{args.label}"
    out = args.out or Path(args.run_dir) / "plots" / f"{stem}-seed{args.seed}{suffix}"
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        if suffix == ".npy":
            np.save(out, samples.numpy().astype(np.float32))
        elif suffix == ".txt":
            out.write_text("".join(f"{line}\n" for line in to_text(samples)))
        else:
            what = "draws from p(x|z)" if args.draw else "decoder means"
            which = "" if args.label is None else f" of class {args.label}"
            fig = samples_figure(samples, value_range, title=f"{args.num} samples{which} from the prior ({what}, seed {args.seed})")
            save_figure(fig, out)
    except OSError as e:
        raise RunDirError(f"cannot write {out}: {e}") from None
    print(f"wrote {out}", file=sys.stderr)
    return 0
