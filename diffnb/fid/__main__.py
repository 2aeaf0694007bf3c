"""``python -m diffnb.fid DIR DIR [--kid] [--against-pytorch-fid]``: FID of two folders of images.

Like pytorch-fid's own CLI (github.com/mseitzer/pytorch-fid, README "Usage"), offline; images of
any size, greyscale or RGB. Scoring a trained preset is ``python -m diffnb.evaluation PRESET``.
"""
from __future__ import annotations

import argparse

from diffnb import runtime
from diffnb.fid.distance import fid_from_features, kid_from_features
from diffnb.fid.network import folder_features, pytorch_fid_cli_score


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python -m diffnb.fid",
                                description="FID of two folders of images (like pytorch-fid).")
    p.add_argument("dirs", nargs="*", metavar="DIR", help="two folders of images")
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1, mps (default: runtime's)")
    p.add_argument("--kid", action="store_true", help="also print KID (mean, std)")
    p.add_argument("--against-pytorch-fid", action="store_true",
                   help="also run `python -m pytorch_fid` offline on the same folders")
    return p


def main(argv=None) -> None:
    parser = _parser()
    args = parser.parse_args(argv)
    if len(args.dirs) != 2:
        parser.error("give two folders of images (to score a trained preset: "
                     "python -m diffnb.evaluation PRESET)")
    a, b = (folder_features(d, batch_size=args.batch_size, device=args.device, progress=True)
            for d in args.dirs)
    print(f"FID:  {fid_from_features(a, b, device=args.device)}")
    if args.kid:
        print("KID:  {} +- {}".format(*kid_from_features(a, b)))
    if args.against_pytorch_fid:
        dev = str(runtime.device(args.device))
        print(f"pytorch-fid FID:  {pytorch_fid_cli_score(*args.dirs, device=dev)}")


if __name__ == "__main__":
    main()
