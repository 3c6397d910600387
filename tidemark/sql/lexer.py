"""The SQL lexer: turns source text into a list of ``Token`` for the parser.

Keywords are not a separate token kind: unquoted words become ``IDENT`` tokens whose ``value``
is folded to lower case, and the parser decides from context whether a word is a keyword.
Double-quoted identifiers become ``QIDENT`` tokens so they are never mistaken for keywords.

Every token carries its 0-based source offsets (so a statement's source text can be sliced
out) and its 1-based line and column (for error messages). Line and column are computed on
demand from the offsets, since only errors and statement positions ever need them. Every
malformed input raises ``SQLSyntaxError``; nothing else escapes.

Speed matters here (a multi-row INSERT can hold tens of thousands of tokens), so the common
tokens are recognised by one compiled scanner pattern and only the rarer or malformed ones
(escape strings, nested comments, hex numbers, ...) go through the hand-written slow paths.
"""

from __future__ import annotations

import bisect
import re
from enum import StrEnum
from typing import Any

from tidemark.errors import SQLSyntaxError

__all__ = ["Token", "TokenKind", "tokenize", "tokenize_with_keys"]


class TokenKind(StrEnum):
    IDENT = "ident"  # unquoted word, value folded to lower case; may be a keyword
    QIDENT = "qident"  # "quoted identifier", value exactly as written
    INT = "int"  # value: int
    DECIMAL = "decimal"  # value: the source text (fraction and/or exponent)
    STRING = "string"  # value: str ('..' and e'..')
    BYTES = "bytes"  # value: bytes (b'..' and x'..')
    PLACEHOLDER = "placeholder"  # value: 1-based int index ($n, or ? numbered in order)
    OP = "op"  # value: the operator, with != normalised to <>
    EOF = "eof"


_LINE_BREAK = re.compile(r"\r\n|\r|\n")


class _LineMap:
    """Maps source offsets to 1-based (line, column); the line table is built on first use."""

    __slots__ = ("_starts", "source")

    def __init__(self, source: str):
        self.source = source
        self._starts: list[int] | None = None

    def where(self, offset: int) -> tuple[int, int]:
        starts = self._starts
        if starts is None:
            starts = self._starts = [0] + [m.end() for m in _LINE_BREAK.finditer(self.source)]
        line = bisect.bisect_right(starts, offset)
        return line, offset - starts[line - 1] + 1


class Token:
    """One token. Tokens are values: treat them as immutable.

    ``line`` and ``column`` (1-based) are computed from ``start`` when asked for.
    """

    __slots__ = ("_lines", "end", "kind", "start", "text", "value")
    __match_args__ = ("kind", "value", "text", "start", "end", "line", "column")

    kind: TokenKind
    value: Any  # typed by kind, see TokenKind
    text: str  # exact source text ("EOF" for the end token)
    start: int  # 0-based offset of the first character
    end: int  # 0-based offset one past the last character

    def __init__(self, kind: TokenKind, value: Any, text: str, start: int, end: int,
                 lines: _LineMap):
        self.kind = kind
        self.value = value
        self.text = text
        self.start = start
        self.end = end
        self._lines = lines

    @property
    def position(self) -> tuple[int, int]:
        """``(line, column)``, both 1-based."""
        return self._lines.where(self.start)

    @property
    def line(self) -> int:
        return self._lines.where(self.start)[0]

    @property
    def column(self) -> int:
        return self._lines.where(self.start)[1]

    def _fields(self) -> tuple[Any, ...]:
        line, column = self._lines.where(self.start)
        return self.kind, self.value, self.text, self.start, self.end, line, column

    def __eq__(self, other: object) -> bool:
        if other.__class__ is not self.__class__:
            return NotImplemented
        assert isinstance(other, Token)
        return self._fields() == other._fields()

    def __hash__(self) -> int:
        return hash(self._fields())

    def __repr__(self) -> str:
        kind, value, text, start, end, line, column = self._fields()
        return (f"Token(kind={kind!r}, value={value!r}, text={text!r}, start={start!r}, "
                f"end={end!r}, line={line!r}, column={column!r})")


# Limits that keep conversions cheap and away from Python's own limits (int() refuses
# strings of more than 4300 digits).
MAX_NUMBER_LENGTH = 1000
MAX_PLACEHOLDER = 65535  # the PostgreSQL wire protocol's limit on bind parameters

_IDENT_REST = re.compile(r"[\w$]*", re.UNICODE)
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_INT = re.compile(r"0[xX][0-9a-fA-F]*")
_DIGITS = re.compile(r"[0-9]*")
_OCTAL_TAIL = re.compile(r"[0-7]{0,2}")
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")

# The scanner: one pattern for the common tokens, each alternative its own group (the match's
# lastindex says which), every alternative swallowing the whitespace that follows it. The
# fast alternatives only match tokens they can convert without further checks; anything
# subtler (escape strings, '' inside a string, hex or exponent numbers, out-of-range or
# malformed placeholders, nested comments) falls to the last group and the slow paths, which
# also produce every error.
_SCAN = re.compile(r"""
    (?:
        ( [eEbBxX]' )                           # 1: e'..', b'..', x'..' (slow path)
      | ( [^\W\d] [\w$]*+ )                     # 2: a word
      | ( :: | <> | != | <= | >= | \|\|         # 3: an operator ("--", "/*", ".5" are not)
          | [=<>+*%,()@;{}] | -(?!-) | /(?!\*) | \.(?![0-9]) )
      | ( [0-9]++ (?![\w$.]) )                  # 4: a plain integer
      | ( '[^']*+' (?!') )                      # 5: a string without '' or escapes
      | ( \$[0-9]{1,5}+ (?![\w$]) )             # 6: a $n placeholder (range checked later)
      | ( [0-9]++ \. [0-9]++ (?![\w$.]) )       # 7: a plain decimal
      | ( "[^"]++" (?!") )                      # 8: a quoted identifier without ""
      | ( \? )                                  # 9: a ? placeholder
      | ( --[^\n]*+\n? )                        # 10: a line comment
      | ( [ \t\n\r\f\v]++ )                     # 11: whitespace not after a token
      | ( /\* | ['"0-9$] | \.[0-9] )            # 12: everything else (slow path)
    )
    [ \t\n\r\f\v]*+
""", re.VERBOSE)
_IDENT, _QIDENT, _OP, _INT, _DECIMAL, _STRING, _PLACEHOLDER = (
    TokenKind.IDENT, TokenKind.QIDENT, TokenKind.OP, TokenKind.INT, TokenKind.DECIMAL,
    TokenKind.STRING, TokenKind.PLACEHOLDER)
(_G_SPECIAL_STRING, _G_WORD, _G_OP, _G_INT, _G_STRING, _G_DOLLAR, _G_DECIMAL, _G_QIDENT,
 _G_QUESTION, _G_COMMENT, _G_SPACE, _G_SLOW) = range(1, 13)

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
                   "\\": "\\", "'": "'", '"': '"'}


def _snippet(text: str) -> str:
    """The first line of ``text``, shortened: a readable token for an error message."""
    first = text.split("\n", 1)[0].rstrip("\r")
    return first if len(first) <= 30 else first[:27] + "..."


class _Lexer:
    def __init__(self, source: str):
        self.src = source
        self.lines = _LineMap(source)
        self.tokens: list[Token] = []
        # Per token: the operator or the (folded) unquoted word, else None. The parser tests
        # for keywords and operators with one lookup in this list.
        self.keys: list[str | None] = []
        self.next_question = 0  # the index the next "?" placeholder gets
        self.placeholder_style: str | None = None  # "$" or "?": the two may not be mixed

    def where(self, offset: int) -> tuple[int, int]:
        return self.lines.where(offset)

    def error(self, message: str, offset: int, token: str, hint: str | None = None):
        line, column = self.where(offset)
        return SQLSyntaxError(f"syntax error: {message}", line=line, column=column,
                              token=token or "EOF", hint=hint)

    def add(self, kind: TokenKind, value: object, start: int, end: int) -> None:
        """Append a token that is neither a word nor an operator (the slow paths' tokens)."""
        self.tokens.append(Token(kind, value, self.src[start:end], start, end, self.lines))
        self.keys.append(None)

    def run(self) -> list[Token]:
        src, n, i = self.src, len(self.src), 0
        lines = self.lines
        add_token, add_key = self.tokens.append, self.keys.append
        match = _SCAN.match
        while i < n:
            m = match(src, i)
            if m is None:
                raise self.error("unexpected character", i, src[i])
            group = m.lastindex
            if group == _G_WORD:
                text = m[group]
                value = text.lower()
                add_token(Token(_IDENT, value, text, i, i + len(text), lines))
                add_key(value)
            elif group == _G_OP:
                text = m[group]
                value = "<>" if text == "!=" else text
                add_token(Token(_OP, value, text, i, i + len(text), lines))
                add_key(value)
            elif group == _G_INT:
                text = m[group]
                if len(text) > MAX_NUMBER_LENGTH:
                    i = self.number(i)
                    continue
                add_token(Token(_INT, int(text), text, i, i + len(text), lines))
                add_key(None)
            elif group == _G_STRING:
                text = m[group]
                add_token(Token(_STRING, text[1:-1], text, i, i + len(text), lines))
                add_key(None)
            elif group == _G_DOLLAR:
                text = m[group]
                index = int(text[1:])
                if not 1 <= index <= MAX_PLACEHOLDER:
                    i = self.dollar_placeholder(i)
                    continue
                if self.placeholder_style != "$":
                    self.use_placeholder_style("$", i)
                add_token(Token(_PLACEHOLDER, index, text, i, i + len(text), lines))
                add_key(None)
            elif group == _G_DECIMAL:
                text = m[group]
                if len(text) > MAX_NUMBER_LENGTH:
                    i = self.number(i)
                    continue
                add_token(Token(_DECIMAL, text, text, i, i + len(text), lines))
                add_key(None)
            elif group == _G_QIDENT:
                text = m[group]
                add_token(Token(_QIDENT, text[1:-1], text, i, i + len(text), lines))
                add_key(None)
            elif group == _G_QUESTION:
                self.use_placeholder_style("?", i)
                self.next_question += 1
                add_token(Token(_PLACEHOLDER, self.next_question, "?", i, i + 1, lines))
                add_key(None)
            elif group in (_G_SLOW, _G_SPECIAL_STRING):
                i = self.slow_token(i)
                continue
            # else a comment or whitespace: nothing to add
            i = m.end()
        self.tokens.append(Token(TokenKind.EOF, None, "EOF", n, n, lines))
        self.keys.append(None)
        return self.tokens

    def slow_token(self, i: int) -> int:
        """Lex the token at ``i`` that the scanner left to a slow path; return its end."""
        src, c = self.src, self.src[i]
        if src.startswith("/*", i):
            return self.block_comment(i)
        if c == "'":
            return self.string(i, i, "plain")
        if c in "eEbBxX":  # followed by a quote, or the scanner would have taken a word
            kind = {"e": "escape", "b": "bytes", "x": "hex"}[c.lower()]
            return self.string(i, i + 1, kind)
        if c == '"':
            return self.quoted_ident(i)
        if c == "$":
            return self.dollar_placeholder(i)
        return self.number(i)  # a digit, or a dot before one

    def block_comment(self, start: int) -> int:
        # Comments nest, as in PostgreSQL: /* a /* b */ c */ is one comment.
        depth, i, src = 0, start, self.src
        while True:
            opening, closing = src.find("/*", i), src.find("*/", i)
            if closing < 0:
                raise self.error("unterminated comment", start, "/*")
            if 0 <= opening < closing:
                depth, i = depth + 1, opening + 2
            else:
                depth, i = depth - 1, closing + 2
                if depth == 0:
                    return i

    def string(self, start: int, quote: int, kind: str) -> int:
        """Lex a quoted literal whose opening quote is at ``quote``; return the end offset."""
        src, n = self.src, len(self.src)
        i = quote + 1
        chunks: list[str] = []
        while True:
            j = src.find("'", i)
            # In escape and bytes strings a backslash can hide a quote, so scan char by char.
            if kind in ("escape", "bytes"):
                j = i
                while j < n and src[j] != "'":
                    j += 2 if src[j] == "\\" else 1
                if j >= n:
                    j = -1
            if j < 0:
                raise self.error("unterminated string literal", start, _snippet(src[start:]))
            chunks.append(src[i:j])
            if j + 1 < n and src[j + 1] == "'":  # '' is an escaped quote
                chunks.append("'")
                i = j + 2
                continue
            end = j + 1
            break
        body = "".join(chunks)
        if kind == "plain":
            self.add(TokenKind.STRING, body, start, end)
        elif kind == "hex":
            if len(body) % 2 or not _HEX_DIGITS.fullmatch(body):
                raise self.error("invalid hexadecimal bytes literal", start,
                                 _snippet(src[start:end]),
                                 hint="x'..' needs an even number of hex digits")
            self.add(TokenKind.BYTES, bytes.fromhex(body), start, end)
        else:
            raw = self.unescape(body, start, end)
            if kind == "bytes":
                self.add(TokenKind.BYTES, raw, start, end)
            else:
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise self.error("invalid UTF-8 byte sequence in string literal", start,
                                     _snippet(src[start:end])) from None
                self.add(TokenKind.STRING, text, start, end)
        return end

    def unescape(self, body: str, start: int, end: int) -> bytes:
        """Decode backslash escapes (PostgreSQL e'' rules) into bytes."""
        out = bytearray()
        i, n = 0, len(body)

        def bad(what: str) -> SQLSyntaxError:
            return self.error(f"invalid {what} in string literal", start,
                              _snippet(self.src[start:end]))

        def put_text(text: str) -> None:
            try:
                out.extend(text.encode("utf-8"))
            except UnicodeEncodeError:  # a lone surrogate in the source text
                raise bad("character") from None

        while i < n:
            k = body.find("\\", i)
            if k < 0:
                put_text(body[i:])
                break
            put_text(body[i:k])
            if k + 1 >= n:
                raise bad("escape sequence")
            c = body[k + 1]
            i = k + 2
            if c in _SIMPLE_ESCAPES:
                out.extend(_SIMPLE_ESCAPES[c].encode())
            elif c == "x":
                digits = _HEX_DIGITS.match(body, i, min(i + 2, n)).group()
                if not digits:
                    raise bad("\\x escape")
                out.append(int(digits, 16))
                i += len(digits)
            elif c in "01234567":
                digits = _OCTAL_TAIL.match(body, i).group()
                value = int(c + digits, 8)
                if value > 0xFF:
                    raise bad("octal escape")
                out.append(value)
                i += len(digits)
            elif c in "uU":
                width = 4 if c == "u" else 8
                digits = body[i:i + width]
                if len(digits) != width or not _HEX_DIGITS.fullmatch(digits):
                    raise bad("Unicode escape")
                code = int(digits, 16)
                if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
                    raise bad("Unicode escape")
                out.extend(chr(code).encode("utf-8"))
                i += width
            else:  # PostgreSQL: any other escaped character stands for itself
                put_text(c)
        return bytes(out)

    def quoted_ident(self, start: int) -> int:
        src, i, parts = self.src, start + 1, []
        while True:
            j = src.find('"', i)
            if j < 0:
                raise self.error("unterminated quoted identifier", start,
                                 _snippet(src[start:]))
            parts.append(src[i:j])
            if src.startswith('""', j):
                parts.append('"')
                i = j + 2
                continue
            name = "".join(parts)
            if not name:
                raise self.error("zero-length delimited identifier", start, '""')
            self.add(TokenKind.QIDENT, name, start, j + 1)
            return j + 1

    def number(self, start: int) -> int:
        src = self.src
        hex_match = _HEX_INT.match(src, start)
        if hex_match:
            end = hex_match.end()
            digits = src[start + 2:end]
            if not digits:
                raise self.error("invalid hexadecimal number", start, src[start:end])
        else:
            end = _NUMBER.match(src, start).end()
        # "123abc" is one mistake, not a number followed by a name.
        if end < len(src) and (src[end].isalnum() or src[end] in "_$"):
            junk_end = _IDENT_REST.match(src, end).end()
            raise self.error("trailing junk after numeric literal", start, src[start:junk_end])
        text = src[start:end]
        if len(text) > MAX_NUMBER_LENGTH:
            raise self.error("numeric literal too long", start, _snippet(text))
        if hex_match:
            self.add(TokenKind.INT, int(text[2:], 16), start, end)
        elif any(ch in text for ch in ".eE"):
            self.add(TokenKind.DECIMAL, text, start, end)
        else:
            self.add(TokenKind.INT, int(text), start, end)
        return end

    def dollar_placeholder(self, start: int) -> int:
        src = self.src
        end = _DIGITS.match(src, start + 1).end()
        text = src[start:end]
        if end == start + 1:
            raise self.error("expected a placeholder number after $", start, "$")
        if end < len(src) and (src[end].isalnum() or src[end] in "_$"):
            junk_end = _IDENT_REST.match(src, end).end()
            raise self.error("invalid placeholder", start, src[start:junk_end])
        index = int(text[1:]) if len(text) <= 10 else MAX_PLACEHOLDER + 1
        if not 1 <= index <= MAX_PLACEHOLDER:
            raise self.error("placeholder index out of range", start, text,
                             hint=f"placeholders are numbered $1 to ${MAX_PLACEHOLDER}")
        self.use_placeholder_style("$", start)
        self.add(TokenKind.PLACEHOLDER, index, start, end)
        return end

    def use_placeholder_style(self, style: str, offset: int) -> None:
        if self.placeholder_style not in (None, style):
            raise self.error("cannot mix $n and ? placeholders", offset, style,
                             hint="number every placeholder ($1, $2, ...) or use only ?")
        self.placeholder_style = style


def tokenize(source: str) -> list[Token]:
    """Lex ``source`` into tokens, ending with an ``EOF`` token.

    ``?`` placeholders are numbered 1, 2, ... in order across the whole source, so a script
    binds one parameter list just as ``$n`` placeholders do.
    """
    return _Lexer(source).run()


def tokenize_with_keys(source: str) -> tuple[list[Token], list[str | None]]:
    """``tokenize``, plus for each token its operator or folded unquoted word (else None)."""
    lexer = _Lexer(source)
    return lexer.run(), lexer.keys
