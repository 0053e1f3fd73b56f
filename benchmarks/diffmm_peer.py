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

Beside the JSON it writes `<out>.per_user.npz`: every epoch's per-user hit@20 on valid and test (the users'
Recall@20, one held-out item each), so `benchmarks/paired_gap.py --peer-hits` can pair a run with DiffMM per user.

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

import numpy as np

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

    per_user: dict[str, list] = {"valid": [], "test": []}

    def user_hits(loader) -> tuple[np.ndarray, np.ndarray]:
        """(users, hit@20 per user) of the embeddings `testEpoch` just scored: what its Recall@20 averages (each
        user here has one held-out item, so recall is the hit), kept so runs can be paired per user."""
        users, hits = [], []
        embeds = current.get("embeds")
        if embeds is None:
            return np.array([]), np.array([])
        usr_embeds, itm_embeds = embeds
        for usr, trn_mask in loader:
            scores = usr_embeds[usr.long()] @ itm_embeds.T * (1 - trn_mask) - trn_mask * 1e8
            top = torch.topk(scores, peer.args.topk).indices.numpy()
            for row, u in enumerate(usr.numpy()):
                held = loader.dataset.tstLocs[u]
                users.append(int(u))
                hits.append(len(set(held) & set(top[row].tolist())) / len(held))
        return np.array(users), np.array(hits, dtype=np.float32)

    original_forward = peer.Model.forward_MM

    def remember_forward(model, *a, **k):  # the embeddings testEpoch ranks with, for `user_hits`
        out = original_forward(model, *a, **k)
        current["embeds"] = (out[0].detach(), out[1].detach())
        return out

    current: dict = {}
    peer.Model.forward_MM = remember_forward

    def test_and_valid(coach):  # the code's own evaluation, once on valid, once on test
        handler = coach.handler
        if "loader" not in valid_loader:
            valid = handler_module.TstData(handler.loadOneFile(handler.predir + "valMat.pkl"), handler.trnMat)
            valid_loader["loader"] = torch.utils.data.DataLoader(valid, batch_size=peer.args.tstBat, shuffle=False)
        test_loader = handler.tstLoader
        handler.tstLoader = valid_loader["loader"]
        try:
            with torch.no_grad():
                valid_res = original_test(coach)
                per_user["valid"].append(user_hits(valid_loader["loader"]))
        finally:
            handler.tstLoader = test_loader
        with torch.no_grad():
            test_res = original_test(coach)
            per_user["test"].append(user_hits(test_loader))
        row = {"epoch": len(epochs), "valid": {k: float(v) for k, v in valid_res.items()},
               "test": {k: float(v) for k, v in test_res.items()}, "elapsed_s": round(time.time() - started, 1)}
        epochs.append(row)
        print(f"\nepoch {row['epoch']}: valid R@20 {row['valid']['Recall']:.4f} N@20 {row['valid']['NDCG']:.4f} | "
              f"test R@20 {row['test']['Recall']:.4f} N@20 {row['test']['NDCG']:.4f} | {row['elapsed_s']} s", flush=True)
        out.write_text(json.dumps(summary(epochs, args), indent=1))
        np.savez_compressed(out.with_suffix(".per_user.npz"),
                            **{f"{split}_{k}_{part}": arrays[i] for split in per_user
                               for k, arrays in enumerate(per_user[split]) for i, part in enumerate(("users", "hits"))})
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
