"""The SQL lexer: turns source text into a list of ``Token`` for the parser.

Keywords are not a separate token kind: unquoted words become ``IDENT`` tokens whose ``value``
is folded to lower case, and the parser decides from context whether a word is a keyword.
Double-quoted identifiers become ``QIDENT`` tokens so they are never mistaken for keywords.

Every token carries its 0-based source offsets (so a statement's source text can be sliced
out) and its 1-based line and column (for error messages). Every malformed input raises
``SQLSyntaxError``; nothing else escapes.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tidemark.errors import SQLSyntaxError

__all__ = ["Token", "TokenKind", "tokenize"]


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


@dataclass(slots=True, frozen=True)
class Token:
    kind: TokenKind
    value: Any  # typed by kind, see TokenKind
    text: str  # exact source text ("EOF" for the end token)
    start: int  # 0-based offset of the first character
    end: int  # 0-based offset one past the last character
    line: int
    column: int


# Limits that keep conversions cheap and away from Python's own limits (int() refuses
# strings of more than 4300 digits).
MAX_NUMBER_LENGTH = 1000
MAX_PLACEHOLDER = 65535  # the PostgreSQL wire protocol's limit on bind parameters

_IDENT_START = re.compile(r"[^\W\d]", re.UNICODE)
_IDENT_REST = re.compile(r"[\w$]*", re.UNICODE)
_NUMBER = re.compile(r"(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?")
_HEX_INT = re.compile(r"0[xX][0-9a-fA-F]*")
_DIGITS = re.compile(r"[0-9]*")
_OCTAL_TAIL = re.compile(r"[0-7]{0,2}")
_HEX_DIGITS = re.compile(r"[0-9a-fA-F]*")
_ASCII_DIGITS = frozenset("0123456789")
_WHITESPACE = re.compile(r"[ \t\n\r\f\v]+")

# Longest first so "<=" wins over "<".
_OPERATORS = ("::", "<>", "!=", "<=", ">=", "||",
              "=", "<", ">", "+", "-", "*", "/", "%", ".", ",", "(", ")", "@", ";", "{", "}")

_SIMPLE_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f",
                   "\\": "\\", "'": "'", '"': '"'}


def _snippet(text: str) -> str:
    """The first line of ``text``, shortened: a readable token for an error message."""
    first = text.split("\n", 1)[0].rstrip("\r")
    return first if len(first) <= 30 else first[:27] + "..."


class _Lexer:
    def __init__(self, source: str):
        self.src = source
        self.line_starts = [0] + [m.end() for m in re.finditer(r"\r\n|\r|\n", source)]
        self.tokens: list[Token] = []
        self.next_question = 0  # the index the next "?" placeholder gets
        self.placeholder_style: str | None = None  # "$" or "?": the two may not be mixed

    def where(self, offset: int) -> tuple[int, int]:
        line = bisect.bisect_right(self.line_starts, offset)
        return line, offset - self.line_starts[line - 1] + 1

    def error(self, message: str, offset: int, token: str, hint: str | None = None):
        line, column = self.where(offset)
        return SQLSyntaxError(f"syntax error: {message}", line=line, column=column,
                              token=token or "EOF", hint=hint)

    def add(self, kind: TokenKind, value: object, start: int, end: int) -> None:
        line, column = self.where(start)
        self.tokens.append(Token(kind, value, self.src[start:end], start, end, line, column))

    def run(self) -> list[Token]:
        src, n, i = self.src, len(self.src), 0
        while i < n:
            c = src[i]
            if m := _WHITESPACE.match(src, i):
                i = m.end()
            elif src.startswith("--", i):
                nl = src.find("\n", i)
                i = n if nl < 0 else nl + 1
            elif src.startswith("/*", i):
                i = self.block_comment(i)
            elif c == "'":
                i = self.string(i, i, "plain")
            elif c in "eEbBxX" and i + 1 < n and src[i + 1] == "'":
                kind = {"e": "escape", "b": "bytes", "x": "hex"}[c.lower()]
                i = self.string(i, i + 1, kind)
            elif c == '"':
                i = self.quoted_ident(i)
            elif c in _ASCII_DIGITS or (c == "." and i + 1 < n and src[i + 1] in _ASCII_DIGITS):
                i = self.number(i)
            elif _IDENT_START.match(c):
                end = _IDENT_REST.match(src, i + 1).end()
                self.add(TokenKind.IDENT, src[i:end].lower(), i, end)
                i = end
            elif c == "$":
                i = self.dollar_placeholder(i)
            elif c == "?":
                self.use_placeholder_style("?", i)
                self.next_question += 1
                self.add(TokenKind.PLACEHOLDER, self.next_question, i, i + 1)
                i += 1
            else:
                for op in _OPERATORS:
                    if src.startswith(op, i):
                        self.add(TokenKind.OP, "<>" if op == "!=" else op, i, i + len(op))
                        i += len(op)
                        break
                else:
                    raise self.error("unexpected character", i, c)
        line, column = self.where(n)
        self.tokens.append(Token(TokenKind.EOF, None, "EOF", n, n, line, column))
        return self.tokens

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
