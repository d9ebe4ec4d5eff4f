"""How a pseudonym domain turns an original value into a pseudonym (gPAS-like), without I/O.

A pseudonym is ``prefix + body + check character``.

Body: ``PRK = HMAC-SHA256(secret, domain || 0x00 || original || 0x00 || attempt)`` (UTF-8 text, the attempt
as decimal digits), expanded in counter mode (``HMAC-SHA256(PRK, block number as 4 bytes)``, NIST SP 800-108
style) into a byte stream, and each byte below the largest multiple of the alphabet size taken modulo that
size (rejection sampling). Why:

- keyed: without the trust centre's secret nobody can recompute a pseudonym from a guessed original
  (a plain hash of an insurance number is reversible by enumeration);
- deterministic: the same secret, domain and original always give the same first candidate, so replays and
  several nodes agree even before the store is consulted;
- domain-separated: the domain name is inside the MAC, so one person's pseudonyms in two domains cannot be
  linked; NUL is refused in domain and original so that the encoding stays unambiguous;
- ``attempt`` 0, 1, 2, ... gives further candidates when the store finds a candidate already taken by
  another original (the store, not this module, decides collisions);
- rejection sampling keeps every alphabet character exactly equally likely; a big-integer modulo would not.

Check character: Damm's algorithm over a totally anti-symmetric quasigroup of the alphabet's size, because
it detects every single-character substitution and every adjacent transposition, including a swap with the
check character itself. ISO 7064 Mod 11,10 / Mod 37,36 and Luhn mod N miss some adjacent transpositions
(e.g. Luhn: the first and last alphabet character). The quasigroup is a direct product of factors (Damm):
``2x + y mod m`` for the odd part m, ``x*a + y`` in GF(2^k) (a = the field generator) for a power of two
k >= 2, and Damm's published order-10 table for a single factor 2 times 5. Alphabet sizes 2 * odd without a
factor 5 (14, 18, 22, ...) have no such simple construction and are refused when a check character is wanted.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import string
from collections.abc import Callable, Mapping
from dataclasses import dataclass, fields
from functools import cache

MIN_SECRET_BYTES = 32
DEFAULT_ALPHABET = "".join(c for c in string.digits + string.ascii_uppercase if c not in "01IO")
_PRINTABLE_NO_SPACE = frozenset(string.printable) - frozenset(string.whitespace)
_PREFIX_CHARACTERS = frozenset(string.ascii_letters + string.digits + "_-")
_MIN_ALPHABET, _MIN_LENGTH, _MAX_LENGTH, _MAX_PREFIX = 10, 6, 64, 16

# Damm's totally anti-symmetric quasigroup of order 10, the table published with his check digit algorithm.
_DAMM_10 = (
    (0, 3, 1, 7, 5, 9, 8, 6, 4, 2),
    (7, 0, 9, 2, 1, 5, 4, 8, 6, 3),
    (4, 2, 0, 6, 8, 7, 1, 3, 5, 9),
    (1, 7, 5, 0, 9, 8, 3, 4, 2, 6),
    (6, 1, 2, 3, 0, 4, 5, 9, 7, 8),
    (3, 6, 7, 4, 2, 0, 9, 5, 8, 1),
    (5, 8, 6, 9, 7, 2, 0, 1, 3, 4),
    (8, 9, 4, 5, 3, 6, 2, 0, 1, 7),
    (9, 4, 3, 8, 6, 1, 7, 2, 0, 5),
    (2, 5, 8, 1, 4, 3, 6, 7, 9, 0),
)
# Irreducible polynomials for GF(2^k), k = 2..6 (an alphabet has at most 94 characters, so 2^k <= 64).
_GF_POLYNOMIAL = {4: 0b111, 8: 0b1011, 16: 0b10011, 32: 0b100101, 64: 0b1000011}

_Operation = Callable[[int, int], int]


@dataclass(frozen=True)
class DomainSettings:
    """How one domain's pseudonyms look; ``length`` counts the body only (not prefix, not check character).

    ``multiple_pseudonyms``: whether an original may also get further, secondary pseudonyms in the domain
    (gPAS's multi-pseudonym domains, e.g. one per record rather than one per person).
    """

    alphabet: str = DEFAULT_ALPHABET
    length: int = 12
    prefix: str = ""
    check_digit: bool = True
    multiple_pseudonyms: bool = False

    def __post_init__(self) -> None:
        _check_alphabet(self.alphabet, self.check_digit)
        if not _MIN_LENGTH <= self.length <= _MAX_LENGTH:
            raise ValueError(f"length: must be between {_MIN_LENGTH} and {_MAX_LENGTH}, got {self.length}")
        if len(self.prefix) > _MAX_PREFIX:
            raise ValueError(f"prefix: at most {_MAX_PREFIX} characters, got {len(self.prefix)}")
        if bad := sorted(set(self.prefix) - _PREFIX_CHARACTERS):
            raise ValueError(f"prefix: only A-Z, a-z, 0-9, '_' and '-' are allowed, got {''.join(bad)!r}")

    @property
    def pseudonym_length(self) -> int:
        """Characters in a whole pseudonym: prefix, body and check character."""
        return len(self.prefix) + self.length + int(self.check_digit)


def _check_alphabet(alphabet: str, check_digit: bool) -> None:
    if bad := sorted(set(alphabet) - _PRINTABLE_NO_SPACE):
        raise ValueError(f"alphabet: only printable ASCII without whitespace is allowed, got {''.join(bad)!r}")
    if duplicates := sorted({c for c in alphabet if alphabet.count(c) > 1}):
        raise ValueError(f"alphabet: duplicate characters {''.join(duplicates)!r}")
    if len(alphabet) < _MIN_ALPHABET:
        raise ValueError(f"alphabet: needs at least {_MIN_ALPHABET} distinct characters, got {len(alphabet)}")
    if check_digit:
        _quasigroup(len(alphabet))  # raises for sizes without a check character


def settings_from_mapping(values: Mapping[str, object]) -> DomainSettings:
    """Domain settings from config or API input, with type errors that name the key."""
    expected = {field.name: type(field.default) for field in fields(DomainSettings)}  # every field has a default
    if unknown := sorted(set(values) - set(expected)):
        raise ValueError(f"unknown setting(s) {', '.join(unknown)}; known: {', '.join(sorted(expected))}")
    for key, value in values.items():
        # bool is an int subclass; a length of True is a mistake, not 1.
        if not isinstance(value, expected[key]) or (expected[key] is int and isinstance(value, bool)):
            raise ValueError(f"{key}: must be {expected[key].__name__}, got {type(value).__name__}")
    return DomainSettings(**values)  # type: ignore[arg-type]  # each value's type was checked above


def candidate(secret: bytes, domain: str, original: str, settings: DomainSettings, attempt: int) -> str:
    """The ``attempt``-th pseudonym candidate (0 first) for ``original`` in ``domain``."""
    if len(secret) < MIN_SECRET_BYTES:
        raise ValueError(f"secret: must be at least {MIN_SECRET_BYTES} bytes, got {len(secret)}")
    for name, text in (("domain", domain), ("original", original)):
        if not text:
            raise ValueError(f"{name}: must not be empty")
        if "\x00" in text:
            raise ValueError(f"{name}: must not contain NUL characters")
    if attempt < 0:
        raise ValueError(f"attempt: must be 0 or more, got {attempt}")
    message = b"\x00".join((domain.encode(), original.encode(), str(attempt).encode()))
    return _pseudonym(hmac.digest(secret, message, hashlib.sha256), settings)


def random_pseudonym(settings: DomainSettings) -> str:
    """A fresh pseudonym drawn at random (a secondary one: nothing to derive it from, nothing to recompute)."""
    return _pseudonym(secrets.token_bytes(32), settings)


def _pseudonym(key: bytes, settings: DomainSettings) -> str:
    """Prefix, the body drawn from `key`'s stream, and the check character."""
    alphabet = settings.alphabet
    body = "".join(alphabet[index] for index in _uniform_indices(key, len(alphabet), settings.length))
    return settings.prefix + body + (_check_character(body, alphabet) if settings.check_digit else "")


def has_valid_check_character(pseudonym: str, settings: DomainSettings) -> bool:
    """Whether the character after prefix and body is the Damm check character of the body."""
    if not settings.check_digit:
        raise ValueError("check_digit: this domain's pseudonyms have no check character")
    if not pseudonym.startswith(settings.prefix) or len(pseudonym) <= len(settings.prefix):
        return False
    rest = pseudonym[len(settings.prefix) :]
    if not set(rest) <= set(settings.alphabet):
        return False
    return _check_character(rest[:-1], settings.alphabet) == rest[-1]


def looks_like_pseudonym(value: str, settings: DomainSettings) -> bool:
    """Whether ``value`` could be a pseudonym of the domain: prefix, length, alphabet and check character."""
    if len(value) != settings.pseudonym_length or not value.startswith(settings.prefix):
        return False
    if not set(value[len(settings.prefix) :]) <= set(settings.alphabet):
        return False
    return not settings.check_digit or has_valid_check_character(value, settings)


def _uniform_indices(key: bytes, size: int, needed: int) -> list[int]:
    """`needed` indices below `size` from the HMAC stream of `key`, rejecting bytes that would bias them.

    Block by block rather than byte by byte: the same indices, a fraction of the interpreter's work.
    """
    accept_below = 256 - 256 % size
    indices: list[int] = []
    block = 1
    while len(indices) < needed:
        digest = hmac.digest(key, block.to_bytes(4, "big"), hashlib.sha256)
        indices += [byte % size for byte in digest if byte < accept_below]
        block += 1
    return indices[:needed]


def _check_character(body: str, alphabet: str) -> str:
    table = _quasigroup(len(alphabet))
    interim = 0
    for character in body:
        interim = table[interim][alphabet.index(character)]
    return alphabet[table[interim].index(0)]


@cache
def _quasigroup(size: int) -> tuple[tuple[int, ...], ...]:
    """A totally anti-symmetric quasigroup of ``size`` as an operation table."""
    factors = _quasigroup_factors(size)
    if factors is None:
        raise ValueError(
            f"alphabet: a check character needs an alphabet size that is odd, a multiple of 4 or 10 times an odd"
            f" number, got {size}; add or remove a character, or set check_digit to false"
        )

    def operate(x: int, y: int) -> int:
        result, weight = 0, 1
        for order, operation in factors:
            result += weight * operation(x % order, y % order)
            x, y, weight = x // order, y // order, weight * order
        return result

    return tuple(tuple(operate(x, y) for y in range(size)) for x in range(size))


def _quasigroup_factors(size: int) -> list[tuple[int, _Operation]] | None:
    power_of_two = size & -size
    odd = size // power_of_two
    factors: list[tuple[int, _Operation]] = []
    if power_of_two >= 4:
        factors.append((power_of_two, lambda x, y: _times_generator(x, power_of_two) ^ y))
    elif power_of_two == 2:
        if odd % 5:
            return None
        factors.append((10, lambda x, y: _DAMM_10[x][y]))
        odd //= 5
    if odd > 1:
        factors.append((odd, lambda x, y: (2 * x + y) % odd))
    return factors


def _times_generator(element: int, field_size: int) -> int:
    shifted = element << 1
    return shifted ^ _GF_POLYNOMIAL[field_size] if shifted >= field_size else shifted
