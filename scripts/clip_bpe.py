"""CLIP's byte-level alphabet, shared by make-fixtures.py and clip-vocab.py."""


def bytes_to_unicode():
    """GPT-2 / CLIP byte-level alphabet: 256 printable characters, in CLIP's vocabulary order."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return [chr(c) for c in cs]
