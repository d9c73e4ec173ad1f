r"""ASCII forms of the regex classes ``\d``, ``\w``, ``\s``, for the pattern compiler, the engine and the header.

Kept apart from ``patterns`` so the header does not import pyparsing.
"""

from __future__ import annotations

_ASCII = {"d": "0-9", "w": "0-9A-Za-z_", "s": "\\t\\n\\v\\f\\r "}


def ascii_classes(regex: str) -> str:
    r"""``\d``, ``\w``, ``\s`` (and ``\D``, ``\W``, ``\S`` outside brackets) as ASCII classes.

    Rust's Unicode classes are large automata; ASCII ones keep the capture
    engines small, which makes extraction 15-20% faster. Log fields are ASCII
    where these classes are used (numbers, ports, host names, flags).
    """
    out: list[str] = []
    i, in_class = 0, False
    while i < len(regex):
        c = regex[i]
        if c == "\\" and i + 1 < len(regex):
            e = regex[i + 1]
            if e in _ASCII:
                out.append(_ASCII[e] if in_class else f"[{_ASCII[e]}]")
            elif e.lower() in _ASCII and not in_class:
                out.append(f"[^{_ASCII[e.lower()]}]")
            else:
                out.append(regex[i:i + 2])
            i += 2
            continue
        if in_class:
            if c == "]" and not (out and out[-1] in ("[", "[^")):
                in_class = False
        elif c == "[":
            in_class = True
            if regex.startswith("[^", i):
                out.append("[^")
                i += 2
                if i < len(regex) and regex[i] == "]":  # "[^]...]": a literal ] first
                    out.append("]")
                    i += 1
                continue
            out.append("[")
            i += 1
            if i < len(regex) and regex[i] == "]":
                out.append("]")
                i += 1
            continue
        out.append(c)
        i += 1
    return "".join(out)
