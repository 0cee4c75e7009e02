"""The policy that ships with slimdrive (`agent=slimdrive`): a packed BitNet b1.58 file inside the package.

`agent/policies/slimdrive.safetensors` is the packed ternary export of the trained default policy;
`agent/policies/slimdrive.json` is its card: the file's sha256 and size, and where it came from (the run, the
data, the commands that reproduce it; docs/model-card.md has the figures). Loading checks the whole file against
the card before the packed loader checks its tensors (`agent.export`), so a damaged install is refused naming
the file instead of driving with altered weights.
"""
from __future__ import annotations

import json
from pathlib import Path

from agent.export import WeightFileError
from envs.provenance import sha256_file

POLICIES = Path(__file__).resolve().parent / "policies"
SHIPPED = POLICIES / "slimdrive.safetensors"
CARD = POLICIES / "slimdrive.json"
REINSTALL = ("restore the file from the repository (`git checkout -- agent/policies/` in a clone) or reinstall "
             "the package, or retrain it with the commands in docs/model-card.md")


def shipped_card() -> dict:
    try:
        return json.loads(CARD.read_text())
    except (OSError, ValueError) as exc:
        raise WeightFileError(f"{CARD}: the shipped policy's card is unreadable ({exc}); {REINSTALL}") from None


def shipped_policy() -> Path:
    """The shipped packed file, verified against its card (sha256 and size)."""
    card = shipped_card()
    if not SHIPPED.is_file():
        raise WeightFileError(f"{SHIPPED}: the shipped policy is missing; {REINSTALL}")
    size, digest = SHIPPED.stat().st_size, sha256_file(SHIPPED)
    if size != card["bytes"] or digest != card["sha256"]:
        raise WeightFileError(f"{SHIPPED}: {size} bytes, sha256 {digest[:16]}..., its card {CARD.name} says "
                              f"{card['bytes']} bytes, {card['sha256'][:16]}... (damaged or replaced); {REINSTALL}")
    return SHIPPED
