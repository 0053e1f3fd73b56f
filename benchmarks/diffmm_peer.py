"""Run the published DiffMM code (HKUDS/DiffMM, ACM MM 2024) on the TikTok split we have, on CPU, with
the epoch chosen on valid: the side-by-side figure for issue 16's TikTok target.

Why: DiffMM's published TikTok figures (Recall@20 .1129, NDCG@20 .0456) come from its `Main.py`, which
evaluates **test** after every epoch and reports the epoch with the highest test Recall@20, on image +
audio + text features. Our figures choose the epoch on valid and have no text medium (`../shared/data/tiktok`
has image and audio only). This script runs DiffMM's own code, unmodified, on exactly our inputs and split
and prints both selections: the epoch valid chooses (our protocol) and the best test epoch (its protocol).

What it changes around the code, not in it:
- CPU: `Tensor.cuda` / `Module.cuda` become the identity (the code calls `.cuda()` everywhere).
- scipy >= 1.14 dropped `coo_matrix.A`; it is put back as `toarray()`.
- `setproctitle` (a process-title nicety the code imports) is stubbed when not installed.
- Image + audio only: DiffMM's two-medium path (the one its Amazon datasets take) is run with TikTok's image
  features as the first medium and its audio features as the second, because the three-medium path is
  hard-wired to a text file we do not have. So this is DiffMM without text, as our model is.
- Valid: after each epoch, the code's own `testEpoch` is also run against the valid matrix (`valMat.pkl`,
  which its loader never reads).

    git clone https://github.com/HKUDS/DiffMM /path/DiffMM      # once, where a network is available
    .venv/bin/python benchmarks/diffmm_peer.py --repo /path/DiffMM --out artifacts/diffmm-tiktok.json

It executes the checkout's code, and that code unpickles its split files (`pickle.load`): run it only on a
checkout you trust (the project's own readers never unpickle; `benchmarks/diffmm_dataset.py` loads the same files
with an unpickler that accepts a COO matrix only). The TikTok flags are the README's (`--reg 1e-4 --ssl_reg 1e-2 --epoch 50 --trans 1 --e_loss 0.1
--cl_method 1`); everything else is `Params.py`'s default. One epoch takes minutes on two CPU cores.
"""
from __future__ import annotations

import argparse
import json
import os
import runpy
import shutil
import sys
import tempfile
import time
import types
from pathlib import Path

TIKTOK_FLAGS = ["--reg", "1e-4", "--ssl_reg", "1e-2", "--trans", "1", "--e_loss", "0.1", "--cl_method", "1"]
SPLIT_FILES = ("trnMat.pkl", "valMat.pkl", "tstMat.pkl")


def stage_inputs(repo: Path, work: Path) -> None:
    """DiffMM's two-medium dataset folder holding TikTok: image as medium 1, audio as medium 2."""
    src = repo / "Datasets" / "tiktok"
    dst = work / "Datasets" / "baby"  # the loader's two-medium path is keyed by this name
    dst.mkdir(parents=True)
    for name in SPLIT_FILES:
        shutil.copy(src / name, dst / name)
    shutil.copy(src / "image_feat.npy", dst / "image_feat.npy")
    shutil.copy(src / "audio_feat.npy", dst / "text_feat.npy")


def install_cpu_shims() -> None:
    """Make the CUDA-only code run on CPU without editing it."""
    import scipy.sparse as sp
    import torch

    torch.Tensor.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    torch.nn.Module.cuda = lambda self, *a, **k: self  # type: ignore[method-assign]
    if not hasattr(sp.coo_matrix, "A"):
        sp.coo_matrix.A = property(lambda self: self.toarray())  # type: ignore[attr-defined]
    if "setproctitle" not in sys.modules:
        try:
            import setproctitle  # noqa: F401
        except ImportError:
            sys.modules["setproctitle"] = types.ModuleType("setproctitle")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", type=Path, required=True, help="a DiffMM checkout (Main.py, Datasets/tiktok)")
    parser.add_argument("--out", type=Path, required=True, help="JSON file for the per-epoch figures")
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--seed", type=int, default=421, help="Params.py's default seed")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    repo = args.repo.resolve()
    out = args.out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)

    import torch

    torch.set_num_threads(args.threads)
    install_cpu_shims()
    work = Path(tempfile.mkdtemp(prefix="diffmm-"))
    stage_inputs(repo, work)
    os.chdir(work)
    sys.path.insert(0, str(repo))
    sys.argv = ["Main.py", "--data", "baby", "--epoch", str(args.epochs), "--seed", str(args.seed), *TIKTOK_FLAGS]

    import DataHandler as handler_module  # noqa: PLC0415  (the peer's modules, from --repo)
    import Main as peer  # noqa: PLC0415

    epochs: list[dict] = []
    started = time.time()
    original_test = peer.Coach.testEpoch
    valid_loader: dict = {}

    def test_and_valid(coach):  # the code's own evaluation, once on valid, once on test
        handler = coach.handler
        if "loader" not in valid_loader:
            valid = handler_module.TstData(handler.loadOneFile(handler.predir + "valMat.pkl"), handler.trnMat)
            valid_loader["loader"] = torch.utils.data.DataLoader(valid, batch_size=peer.args.tstBat, shuffle=False)
        test_loader = handler.tstLoader
        handler.tstLoader = valid_loader["loader"]
        try:
            valid_res = original_test(coach)
        finally:
            handler.tstLoader = test_loader
        test_res = original_test(coach)
        row = {"epoch": len(epochs), "valid": {k: float(v) for k, v in valid_res.items()},
               "test": {k: float(v) for k, v in test_res.items()}, "elapsed_s": round(time.time() - started, 1)}
        epochs.append(row)
        print(f"\nepoch {row['epoch']}: valid R@20 {row['valid']['Recall']:.4f} N@20 {row['valid']['NDCG']:.4f} | "
              f"test R@20 {row['test']['Recall']:.4f} N@20 {row['test']['NDCG']:.4f} | {row['elapsed_s']} s", flush=True)
        out.write_text(json.dumps(summary(epochs, args), indent=1))
        return test_res

    peer.Coach.testEpoch = test_and_valid
    peer.seed_it(args.seed)
    handler = peer.DataHandler()
    handler.LoadData()
    peer.Coach(handler).run()
    out.write_text(json.dumps(summary(epochs, args), indent=1))
    print(json.dumps(summary(epochs, args)["selected"], indent=1))


def summary(epochs: list[dict], args: argparse.Namespace) -> dict:
    """Both selections: the epoch valid Recall@20 chooses (ours) and the best test Recall@20 (DiffMM's)."""
    by_valid = max(epochs, key=lambda r: r["valid"]["Recall"])
    by_test = max(epochs, key=lambda r: r["test"]["Recall"])
    return {
        "peer": "HKUDS/DiffMM Main.py, image + audio (two-medium path), CPU", "flags": TIKTOK_FLAGS,
        "seed": args.seed, "epochs_run": len(epochs),
        "selected": {"by_valid_recall": {"epoch": by_valid["epoch"], "test": by_valid["test"], "valid": by_valid["valid"]},
                     "by_test_recall (DiffMM's Main.py)": {"epoch": by_test["epoch"], "test": by_test["test"]}},
        "epochs": epochs,
    }


if __name__ == "__main__":
    main()
