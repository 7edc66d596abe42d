"""`sendmail -P`: the configuration in effect, where each value came from, secrets masked."""

from __future__ import annotations

from relay.config import SECRET_KEYS, Config

_SKIP = {"path", "sources", "warnings", "revaliases"}


def describe(config: Config) -> str:
    lines = [f"config file: {config.path}"]
    for name in config._fields():
        if name in _SKIP:
            continue
        value = getattr(config, name)
        if name in SECRET_KEYS and value is not None:
            shown = "***"
        elif name == "mailhubs":
            shown = ",".join(str(hub) for hub in value) or "(none)"
        elif value is None:
            shown = "(unset)"
        elif isinstance(value, bool):
            shown = "yes" if value else "no"
        else:
            shown = str(value)
        source = config.sources.get(name, "default")
        lines.append(f"{name} = {shown}  [{source}]")
    for login, entry in sorted(config.revaliases.items()):
        hub = f" via {entry.mailhub}" if entry.mailhub else ""
        lines.append(
            f"revalias {login} = {entry.address}{hub}  [{config.revaliases_path}:{entry.line}]"
        )
    return "\n".join(lines) + "\n"
