"""Editing params.yaml in place, comments and layout kept (ruamel round trip),
and the one source of defaults.

`apply_overrides` sets dotted keys (what `dvc exp run -S` does; used by the
pipeline flow, flows/repro.py). The defaults live in `pipeline/config.py` only;
the committed params.yaml must hold the same values (tests/test_config.py
checks it). After changing a default there, write it into params.yaml with

    python -m pipeline.params_file --sync-defaults params.yaml

A *profile* (`profiles/*.yaml`) is a params overlay: the keys it sets, nothing
else. `--set-args PROFILE` validates params.yaml + the overlay and prints the
matching `dvc exp run` arguments (`-S key=value …`), so a profile runs as a DVC
experiment: `dvc exp run -n faces $(python -m pipeline.params_file --set-args
profiles/faces.yaml)` (`make faces`).
"""
from __future__ import annotations

import argparse
import io
import json
import sys
from pathlib import Path
from typing import Any

from pipeline.config import Config, ConfigError, load_config, parse_params_text
from pipeline.jsonio import atomic_path


def parse_overrides(overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Dotted keys (`ingest.toon_count`) -> values; nested dicts are flattened."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict) and value:
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else str(key), sub)
        else:
            if not prefix or "" in prefix.split("."):
                raise ConfigError(f"overrides: bad key {prefix!r} (use section.key)")
            flat[prefix] = value

    for key, value in (overrides or {}).items():
        walk(str(key), value)
    return flat


def apply_overrides(params_path: Path, overrides: dict[str, Any]) -> list[str]:
    """Set dotted keys in params.yaml (comments kept); validate first.

    Returns one "key: old -> new" line per changed value. Raises ConfigError
    (naming the key) and leaves the file untouched when the result is invalid.
    """
    from ruamel.yaml import YAML

    flat = parse_overrides(overrides)
    if not flat:
        return []
    rt = YAML()  # round trip: keeps comments and key order
    rt.preserve_quotes = True
    # Write null as `null` (ruamel's default is an empty value), as params.yaml does.
    rt.representer.add_representer(
        type(None), lambda rep, _: rep.represent_scalar("tag:yaml.org,2002:null", "null"))
    text = params_path.read_text()
    doc = rt.load(text) or {}
    changes = []
    for dotted, value in flat.items():
        node = doc
        *parents, leaf = dotted.split(".")
        for key in parents:
            if key not in node or node[key] is None:
                node[key] = {}
            node = node[key]
            if not isinstance(node, dict):
                raise ConfigError(f"overrides: {dotted}: {key} is not a section")
        old = node.get(leaf, "(unset)")
        if old != value:
            node[leaf] = value
            changes.append(f"{dotted}: {old} -> {value}")
    buf = io.StringIO()
    rt.dump(doc, buf)
    # Validate exactly what will be on disk, with the same loader the stages use.
    parse_params_text(buf.getvalue(), f"{params_path} (with overrides)")
    if changes:
        with atomic_path(params_path) as tmp:
            tmp.write_text(buf.getvalue())
    return changes


def flat_values(cfg: Config) -> dict[str, Any]:
    """Every leaf of a Config as dotted key -> value."""
    flat: dict[str, Any] = {}

    def walk(prefix: str, value: Any) -> None:
        if isinstance(value, dict):
            for key, sub in value.items():
                walk(f"{prefix}.{key}" if prefix else key, sub)
        else:
            flat[prefix] = value

    walk("", cfg.model_dump(mode="json"))
    return flat


# Values Config derives from others (model.style_dim follows featurize.code):
# params.yaml leaves them unset.
DERIVED = {"model.style_dim"}


def differing_defaults(params_path: Path) -> dict[str, tuple[Any, Any]]:
    """{dotted key: (default in pipeline/config.py, value in the params file)}
    for every value the file sets differently from the default."""
    defaults, values = flat_values(Config()), flat_values(load_config(params_path))
    return {k: (defaults[k], values[k]) for k in defaults
            if k not in DERIVED and defaults[k] != values[k]}


def sync_defaults(params_path: Path) -> list[str]:
    """Write pipeline/config.py's defaults into the params file (only the values
    that differ; comments kept). Returns the changed "key: old -> new" lines."""
    return apply_overrides(params_path, {k: d for k, (d, _) in differing_defaults(params_path).items()})


def profile_set_args(profile: Path, params: Path) -> list[str]:
    """`dvc exp run` arguments (`-S`, `key=value`, …) setting a profile's keys,
    after checking that params + profile is a valid config."""
    import tempfile

    import yaml

    from pipeline.config import _UniqueKeyLoader

    try:
        overlay = yaml.load(profile.read_text(encoding="utf-8"), Loader=_UniqueKeyLoader)
    except (OSError, yaml.YAMLError) as err:
        raise ConfigError(f"{profile}: cannot read the profile ({str(err).splitlines()[0]})") from None
    if not isinstance(overlay, dict):
        raise ConfigError(f"{profile}: a profile is a mapping of params sections")
    flat = parse_overrides(overlay)
    with tempfile.TemporaryDirectory() as tmp:
        trial = Path(tmp) / "params.yaml"
        trial.write_text(params.read_text())
        apply_overrides(trial, flat)  # raises ConfigError naming the key
    args = []
    for key, value in flat.items():
        if isinstance(value, (list, dict)):  # compact YAML flow: no spaces to split on
            text = json.dumps(value, separators=(",", ":"))
        else:
            text = yaml.safe_dump(value).strip().removesuffix("...").strip()
        if any(c.isspace() for c in text):
            raise ConfigError(f"{profile}: {key}: a value with spaces cannot pass through the "
                              "shell here; run `dvc exp run -S` by hand")
        args += ["-S", f"{key}={text}"]
    return args


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    action = parser.add_mutually_exclusive_group(required=True)
    action.add_argument("--sync-defaults", type=Path, metavar="PARAMS",
                        help="write pipeline/config.py's defaults into this params file")
    action.add_argument("--set-args", type=Path, metavar="PROFILE",
                        help="print the `dvc exp run -S` arguments of this profile")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"),
                        help="the params file a profile overlays (default params.yaml)")
    args = parser.parse_args(argv)
    try:
        if args.set_args:
            print(" ".join(profile_set_args(args.set_args, args.params)))
            return 0
        changes = sync_defaults(args.sync_defaults)
    except ConfigError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    print("\n".join(changes) if changes else f"{args.sync_defaults}: already the defaults")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
