"""Tokenizer for ESP's expression language (a CEL syntax subset).

The lexer turns source text into a list of :class:`Token`, each carrying its 0-based
``pos`` so every later error can point at the offending character. It knows about:

* integers (decimal and ``0x`` hex; a literal over ``2**63`` is rejected here),
* floats (``1.5``, ``1e9``, ``2.5e-3``),
* strings in ``'...'`` or ``"..."`` with CEL escapes, and raw strings ``r'...'``,
* identifiers and the keywords ``true false null in``,
* operators and punctuation, and ``//`` line comments.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from runtime.errors import ExpressionError

#: The largest magnitude an integer literal may have (``-9223372036854775808`` needs it).
INT_LITERAL_MAX = 2**63

KEYWORDS = frozenset({"true", "false", "null", "in"})

# Longest operators first so that '<=' wins over '<'.
_OPERATORS = (
    "&&", "||", "==", "!=", "<=", ">=",
    "<", ">", "!", "+", "-", "*", "/", "%", "?", ":", "(", ")", "[", "]", ",", ".",
)  # fmt: skip

_SPACE = re.compile(r"(?:[ \t\r\n\f]+|//[^\n]*)+")
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[0-9]+(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?|[0-9]+(?:[eE][+-]?[0-9]+)")
_IDENT = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_IDENT_CHAR = re.compile(r"[A-Za-z0-9_]")

_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", "'": "'", '"': '"', "`": "`", "?": "?",
}  # fmt: skip


@dataclass(frozen=True, slots=True)
class Token:
    """One lexical token.

    ``kind`` is ``"int"``, ``"float"``, ``"string"``, ``"ident"``, ``"eof"``, a keyword
    (``"true"``, ``"false"``, ``"null"``, ``"in"``) or the operator text itself (``"&&"``).
    ``value`` is the decoded literal value (int, float, str) or the identifier name.
    """

    kind: str
    value: object
    pos: int
    text: str

    def describe(self) -> str:
        """How an error message names this token: ``'data'`` or ``end of input``."""
        if self.kind == "eof":
            return "end of input"
        return repr(self.text) if len(self.text) <= 40 else repr(self.text[:37] + "...")


def _fail(source: str, message: str, pos: int) -> ExpressionError:
    return ExpressionError(message, expression=source, position=pos)


def _describe_char(source: str, pos: int) -> str:
    return "end of input" if pos >= len(source) else repr(source[pos])


def tokenize(source: str) -> list[Token]:
    """Split ``source`` into tokens, ending with one ``eof`` token.

    Raises :class:`ExpressionError` naming the position of the first unusable character.
    """
    tokens: list[Token] = []
    pos = 0
    end = len(source)
    while True:
        m = _SPACE.match(source, pos)
        if m:
            pos = m.end()
        if pos >= end:
            tokens.append(Token("eof", None, end, ""))
            return tokens
        ch = source[pos]
        if "0" <= ch <= "9":
            tokens.append(_number(source, pos))
        elif ch in "'\"":
            tokens.append(_string(source, pos, raw=False))
        elif ch in "rR" and pos + 1 < end and source[pos + 1] in "'\"":
            tok = _string(source, pos + 1, raw=True)
            tokens.append(Token("string", tok.value, pos, source[pos : pos + 1] + tok.text))
        elif (m := _IDENT.match(source, pos)) is not None:
            word = m.group()
            kind = word if word in KEYWORDS else "ident"
            tokens.append(Token(kind, word, pos, word))
        else:
            tokens.append(_operator(source, pos))
        pos += len(tokens[-1].text)


def _number(source: str, pos: int) -> Token:
    m = _NUMBER.match(source, pos)
    assert m is not None
    text = m.group()
    after = m.end()
    if after < len(source) and (source[after] in "uU" or source[after] == "."):
        if source[after] in "uU":
            raise _fail(
                source,
                f"expected a signed number at position {after}, found 'u' (unsigned literals are not supported)",
                after,
            )
        if after + 1 < len(source) and source[after + 1].isdigit():
            raise _fail(source, f"expected a digit or operator at position {after}, found '.'", after)
    if after < len(source) and _IDENT_CHAR.match(source[after]):
        raise _fail(source, f"expected an operator after number at position {after}, found {source[after]!r}", after)
    if text[:2] in ("0x", "0X"):
        value: int | float = int(text, 16)
    elif any(c in text for c in ".eE"):
        return Token("float", float(text), pos, text)
    else:
        value = int(text)
    if value > INT_LITERAL_MAX:
        raise _fail(source, f"expected an integer literal of at most 2**63 at position {pos}, found {text}", pos)
    return Token("int", value, pos, text)


def _string(source: str, pos: int, *, raw: bool) -> Token:
    """Lex the quoted string starting with the quote at ``pos``."""
    quote = source[pos]
    out: list[str] = []
    i = pos + 1
    end = len(source)
    while True:
        if i >= end or source[i] == "\n":
            raise _fail(
                source,
                f"expected closing {quote} for the string at position {pos}, "
                f"found {_describe_char(source, i)} at position {i}",
                pos,
            )
        ch = source[i]
        if ch == quote:
            text = source[pos : i + 1]
            return Token("string", "".join(out), pos, text)
        if ch == "\\" and not raw:
            decoded, i = _escape(source, i)
            out.append(decoded)
            continue
        out.append(ch)
        i += 1


def _escape(source: str, i: int) -> tuple[str, int]:
    """Decode the escape sequence whose backslash is at ``i``; return text and next index."""
    nxt = source[i + 1] if i + 1 < len(source) else ""
    if nxt in _SIMPLE_ESCAPES:
        return _SIMPLE_ESCAPES[nxt], i + 2
    widths = {"x": 2, "X": 2, "u": 4, "U": 8}
    if nxt in widths:
        digits = source[i + 2 : i + 2 + widths[nxt]]
        if len(digits) == widths[nxt] and all(c in "0123456789abcdefABCDEF" for c in digits):
            code = int(digits, 16)
            if code <= 0x10FFFF and not 0xD800 <= code <= 0xDFFF:
                return chr(code), i + 2 + widths[nxt]
        raise _fail(
            source,
            f"expected {widths[nxt]} hex digits of a valid code point after "
            f"'\\{nxt}' at position {i}, found {digits!r}",
            i,
        )
    if nxt and nxt in "0123":
        digits = source[i + 1 : i + 4]
        if len(digits) == 3 and all(c in "01234567" for c in digits):
            return chr(int(digits, 8)), i + 4
        raise _fail(source, f"expected 3 octal digits after '\\' at position {i}, found {digits!r}", i)
    found = "end of input" if not nxt else repr(nxt)
    raise _fail(source, f"expected a valid escape sequence after '\\' at position {i}, found {found}", i)


def _operator(source: str, pos: int) -> Token:
    for op in _OPERATORS:
        if source.startswith(op, pos):
            if op == "*" and source.startswith("**", pos):
                raise _fail(
                    source,
                    f"expected an operand at position {pos + 1}, found '*' (there is no power operator)",
                    pos + 1,
                )
            return Token(op, op, pos, op)
    ch = source[pos]
    hints = {"=": "'=='", "&": "'&&'", "|": "'||'"}
    expected = hints.get(ch, "an operator, operand or ')'")
    raise _fail(source, f"expected {expected} at position {pos}, found {ch!r}", pos)
