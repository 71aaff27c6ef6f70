"""An agent's new words in a reply to a notification: no quoted history, no attribution line.

Agents answer tickets from their own mail client by replying to a notification; only what
they typed above the quote may reach the customer. Quoted history and attribution lines
("On ... wrote:", Outlook's From/Sent/To/Subject block in 13 languages) are found by
mail-parser-reply's header detection; the extra rules below cover client shapes it misses,
each saying which client writes it. Everything here is best effort and never raises.
"""

from __future__ import annotations

import logging
import re
from email.utils import parseaddr
from html.parser import HTMLParser

from mailparser_reply.constants import MAIL_LANGUAGES
from mailparser_reply.parser import EmailMessage

from supportd.adapters.mailparse import html_to_text

MARKER = "##- Reply above this line: your words go to the customer -##"
WORK_LIMIT = 200_000  # characters of text or HTML looked at; the new words come first
LINE_LIMIT = 1_000  # characters of one line the rules look at: headers are short lines

log = logging.getLogger(__name__)

# The library's own header detection (the regex EmailMessage.read() splits on), built once
# for every language it ships. We search it ourselves rather than take parse_reply():
# parse_reply returns the quoted history itself when a reply has no new words above the
# attribution, strips every line's indentation (an agent's indented list) and its
# underscore normalisation drops lines, so its cut cannot be mapped back to the text.
# keep_hyphen_lists only changes the signature regex; we keep the agent's signature
# anyway: EmailReply.body cuts at the first line starting "Thanks," or "Best," and drops
# everything after it, while parse_reply's content keeps the signature, and so do we.
_LIBRARY = EmailMessage(text="", languages=list(MAIL_LANGUAGES), keep_hyphen_lists=True)
_HEADER = _LIBRARY.HEADER_REGEX

_QUOTE_PREFIX = re.compile(r"^[ \t]*(?:>[ \t]?)+")
_MARKER_LINE = re.compile(r"#+-?\s*reply above this line", re.IGNORECASE)
_BLANK_OR_SEPARATOR = re.compile(r"^[\s>]*(?:[-_=*~]{3,}\s*)?$")
# A line of underscores alone is a separator no one types as message text: Outlook's above
# its From block (32), mailing-list footers (47, shortened in some quotes).
_UNDERSCORES = re.compile(r"^[\s>]*_{2,}\s*$")
# "-----Original Message-----" in other languages and clients: Outlook de "-----Ursprüngliche
# Nachricht-----", Android/Samsung "-------- Original message --------", fr "-------- Message
# d'origine --------", da "-------- Oprindelig besked --------", Zoho "---- On <date>
# <address> wrote ----". The title must name a message, so "---- Step 2 ----" stays.
_DASH = "=_\\-\u2010-\u2015"  # and the Unicode hyphens and dashes (Proton's "‐‐‐‐ Original")
_DASHED_TITLE = re.compile(
    rf"^[\s>]*[{_DASH}]{{4,}}[ \t]*(?=[^\s{_DASH}])[^\n]{{0,80}}?\b(?:original|message|"
    r"nachricht|meddelelse|besked|mensaje|messaggio|bericht|wiadomo\w*|сообщение|viesti|"
    r"melding|meddelande|mensagem|forwarded|weitergeleitet\w*|wrote|schrieb|origine|"
    r"zpráva|správa|üzenet|mesaj|повідомлення|μήνυμα|原始邮件|原始郵件|元のメッセージ|"
    r"원본 메시지)\b"
    rf"[^\n]{{0,80}}?[{_DASH}]{{3,}}\s*$",
    re.IGNORECASE,
)
# Any such dashed title line right above history found otherwise goes with it.
_DASHED_LINE = re.compile(rf"^[\s>]*[{_DASH}]{{4,}}[^\n]{{0,80}}?[{_DASH}]{{4,}}\s*$")
_LONE_DELIMITER = re.compile(r"\n--[ \t]?\Z")
_EMAIL = re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+")
_TIME_OR_YEAR = re.compile(r"(?<!\d)\d{1,2}[:.]\d{2}(?!\d)|(?<!\d)(?:19|20)\d{2}(?!\d)")
_WROTE = re.compile(
    r"(?:wrote|schrieb|a [ée]crit|escribi[óo]|escreveu|ha scritto|schreef|skrev|kirjoitti|"
    r"napisa[łl]a?|napsal(?:\(a\))?|написал[а]?|написав|yazd[ıi]|írta|scrie|έγραψε|写道|寫道|"
    r"geschreven|のメール|님이 작성)\s*[-:：]*$",
    re.IGNORECASE,
)
# Outlook and webmail header blocks the library misses: fr "Envoyé le :" (Outlook.com) and
# "A :"/"Sujet :"/"Copie à :" (Orange), pt, fi, ru, tr, hu labels, and a From line
# wrapped before its address. A block needs a From-like label and one more label.
_FROM_LABELS = (
    "from|de|von|da|van|fra|från|od|от|від|από|lähettäjä|kimden|feladó|message du|expéditeur|"
    "remitente|差出人|送信者|发件人|發件人|寄件者|보낸 사람"
)
_OTHER_LABELS = (
    "sent|to|subject|date|cc|bcc|reply-to|envoyé|envoyé le|à|a|objet|sujet|copie à|"
    "gesendet|an|betreff|datum|enviado|enviada|para|asunto|assunto|fecha|data|inviato|"
    "oggetto|verzonden|aan|onderwerp|sendt|til|emne|skickat|till|ämne|wysłano|do|temat|"
    "отправлено|кому|тема|дата|копия|lähetetty|vastaanottaja|aihe|päivämäärä|gönderildi|"
    "kime|konu|tarih|küldve|címzett|tárgy|dátum|enviado el|enviada el|odesláno|komu|předmět|"
    "надіслано|копія|στάλθηκε|προς|θέμα|κοιν|ημερομηνία|送信日時|宛先|件名|日付|発信日時|"
    "发送时间|发件时间|收件人|主题|抄送|日期|時間|寄件日期|收件者|主旨|副本|"
    "받는 사람|보낸 날짜|제목|참조|날짜"
)
_LABEL_LINE = re.compile(
    rf"^[\s>]*[*_]*(?:(?P<from>{_FROM_LABELS})|{_OTHER_LABELS})[*_]*[ \t\xa0]{{0,2}}[:：]",
    re.IGNORECASE,
)
_FIELD = re.compile(r"^[\s>*]*[^\W\d_]+(?:[ -][^\W\d_]+){0,2}[ \xa0]?[:：][ *]*\S")
_CONTINUATION = re.compile(r"^[\s>]*(?:[<(\[]|\S+@\S+\s*$)")
# Mobile clients' sign-off line ends what the sender typed (iOS and Android Mail, Outlook
# mobile, which may append the history unquoted below it); dropped, which reads nicer to the
# customer. It names the sender's device ("my ...") or a mail app, is short and has no
# comma: "Sent from my desk, ..." or "Sent from Berlin on Monday" stay.
_SENT_FROM = re.compile(
    r"^(?:(?:sent from|sent with|get outlook for|envoyé (?:de|depuis|à partir de|avec)|"
    r"enviado (?:desde|do|de)|gesendet (?:von|mit)|inviato da|verzonden (?:vanaf|met)|"
    r"verstuurd (?:vanaf|met)|skickat från|sendt fra|wysłano z|wysłane z|odesláno z|"
    r"отправлено (?:с|из)|надіслано з)\s+|发自|發自)(?P<rest>[^,;!\n]{1,80})$",
    re.IGNORECASE,
)
# The verb last: de "Von meinem iPhone gesendet", "Von Outlook für Android gesendet"
# (Samsung adds a full stop), ja "iPhoneから送信", ko "iPhone에서 보냄".
_SENT_LAST = re.compile(
    r"^(?:von (?P<von>[^,;!\n]{1,60}) gesendet\.?|(?P<rest>[^,;!\n]{1,60})(?:から送信|에서 보냄))$",
    re.IGNORECASE,
)
# Outlook mobile links its app: "Get Outlook for Android<https://aka.ms/...>".
_TRAILING_LINK = re.compile(r"\s*<https?://[^>\s]*>$")
_DEVICE = re.compile(
    r"^(?:my|mon|ma|mi|meinem|mijn|min|mio|meu|mého|моего)\b|(?<![a-z])(?:mail|outlook|yahoo|"
    r"gmail|aol|android|ios|iphone|ipad|blackberry|samsung|galaxy|mobile|proton\s?mail|"
    r"typeapp|bluemail|spark)(?![a-z])",
    re.IGNORECASE,
)


def new_words(text: str, html: str = "", *, support_address: str = "") -> str:
    """The agent's new words in a reply: text part if any, else the HTML part."""
    if not (isinstance(text, str) and text.strip()):
        return html_new_words(html, support_address=support_address)
    try:
        return _text_new_words(text[:WORK_LIMIT], support_address)
    except Exception:  # a reply must never take the mail loop down
        log.exception("could not extract the new words of a reply")
        return ""


def html_new_words(html: str, *, support_address: str = "") -> str:
    """The agent's new words in an HTML-only reply: quoted parts cut, then the text rules."""
    if not (isinstance(html, str) and html.strip()):
        return ""
    try:
        return _text_new_words(_html_kept_text(html[:WORK_LIMIT]), support_address)
    except Exception:  # a reply must never take the mail loop down
        log.exception("could not extract the new words of an HTML reply")
        return ""


def _text_new_words(text: str, support_address: str) -> str:
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    cut = _first_history_line(lines)
    kept = lines[:cut]
    token = _token_pattern(support_address)
    kept = [
        # "-- " keeps its space: the signature delimiter (RFC 3676) the customer's client knows.
        line if line == "-- " else line.rstrip()
        for line in kept
        if not _QUOTE_PREFIX.match(line) and not (token and token.search(line))
    ]
    words = "\n".join(kept).strip()
    # A signature delimiter with nothing under it: the sign-off below it was cut (K-9).
    return _LONE_DELIMITER.sub("", words).rstrip()


def _first_history_line(lines: list[str]) -> int:
    """Index of the first line that is not the agent's (len(lines) when all are)."""
    lines = [line[:LINE_LIMIT] for line in lines]
    cut = _first_rule_line(lines)
    # The library's header regex runs on the text above the earliest extra-rule cut only:
    # cheaper on long histories, and nothing below that cut matters.
    stripped = "\n".join(line.strip() for line in lines[:cut])
    for match in _HEADER.finditer(stripped):
        found = match.group(0)
        # pl's from_header accepts one "Data:", "Do:" or "Od:" line alone: an agent's
        # "Data: see the attached export" must not end the reply. A header block of that
        # shape ("Label: value") needs two such lines, as in every other language.
        fields = [line for line in found.split("\n") if _FIELD.match(line)]
        if len(fields) == 1 and _FIELD.match(found.strip()) and not found.rstrip().endswith(":"):
            continue
        start = match.start() + len(found) - len(found.lstrip())
        first = stripped.count("\n", 0, start)
        # Its English and French patterns take an agent's own sentence ("On Friday the
        # courier wrote:", "To: billing@...\nSubject: ..." as instructions): quoted history
        # says when it was written, in the match or the lines of its block.
        block = lines[first : stripped.count("\n", 0, match.end()) + 4]
        if not _TIME_OR_YEAR.search("\n".join(block)):
            continue
        cut = min(cut, first)
        break
    # Apple Mail wraps a long attribution after its commas ("On Nov 21, 2014,\nat 10:18,\n
    # John <john@x> wrote:"); its head lines go with it.
    for _ in range(2):
        above = lines[cut - 1].strip() if cut > 0 else ""
        if not (above.endswith(",") and len(above) <= 80 and _TIME_OR_YEAR.search(above)):
            break
        cut -= 1
    # Separators and blank lines right above the history go with it (Outlook's underscores
    # or dashes above "From:", the "====" some webmails put above their header block).
    while cut > 0 and (
        _BLANK_OR_SEPARATOR.match(lines[cut - 1])
        or (cut < len(lines) and _DASHED_LINE.match(lines[cut - 1]))
    ):
        cut -= 1
    return cut


def _first_rule_line(lines: list[str]) -> int:
    """First line the extra rules (not the library) see as history."""
    for index, line in enumerate(lines):
        if not line.strip():
            continue
        if _MARKER_LINE.search(line):
            return index
        if _UNDERSCORES.match(line) or _DASHED_TITLE.match(line):
            return index
        if _is_sent_from(_QUOTE_PREFIX.sub("", line).strip()):
            return index
        if _LABEL_LINE.match(line) and _is_header_block(lines, index):
            return index
        start = _attribution_start(lines, index)
        if start is not None:
            return start
    return len(lines)


def _is_sent_from(line: str) -> bool:
    line = _TRAILING_LINK.sub("", line)
    last = _SENT_LAST.match(line)
    if last is not None:
        rest = last.group("von") or last.group("rest")
        return rest.lower().startswith("meinem ") or _DEVICE.search(rest) is not None
    match = _SENT_FROM.match(line)
    return match is not None and _DEVICE.search(match.group("rest")) is not None


def _is_header_block(lines: list[str], index: int) -> bool:
    """A From-like label line followed by another label line (wrapped lines allowed)."""
    labels = 0
    has_from = False
    for line in lines[index : index + 6]:
        match = _LABEL_LINE.match(line)
        if match:
            labels += 1
            has_from = has_from or match.group("from") is not None
        elif not (labels and _CONTINUATION.match(line)):
            break
        if labels >= 2 and has_from:
            return True
    return False


def _attribution_start(lines: list[str], end: int) -> int | None:
    """Start of an attribution line ending at lines[end], in shapes the library misses.

    Gmail (old and non-English), Yandex, Mail.ru, Orange, Zoho and others write "<date>
    <name> <address> <verb>:" or "<date>, <name> <address>:", wrapped over up to three
    lines. It must carry a date or time (and an address when it has no "wrote" verb) and
    be followed by a blank line, a quote or the end, so an agent's sentence ending in a
    colon stays.
    """
    last = _QUOTE_PREFIX.sub("", lines[end]).strip()
    if not last.endswith((":", "：")) and not _WROTE.search(last):
        return None
    after = lines[end + 1] if end + 1 < len(lines) else ""
    if after.strip() and not _QUOTE_PREFIX.match(after):
        return None
    joined = ""
    for start in range(end, max(end - 3, -1), -1):
        part = _QUOTE_PREFIX.sub("", lines[start]).strip()
        if not part or len(joined) > 300:
            return None
        joined = f"{part} {joined}".strip()
        if not _TIME_OR_YEAR.search(joined):
            continue
        if _WROTE.search(joined) or (_EMAIL.search(joined) and joined.endswith((":", "："))):
            return start
    return None


def _token_pattern(support_address: str) -> re.Pattern[str] | None:
    """Matches support+TOKEN@domain for the desk's address, any case."""
    address = parseaddr(support_address or "")[1]
    local, at, domain = address.partition("@")
    if not (local and at and domain):
        return None
    return re.compile(rf"{re.escape(local)}\+[^@\s<>]+@{re.escape(domain)}", re.IGNORECASE)


class _Stop(Exception):
    """Raised inside the parser once the history starts: the rest need not be parsed."""


class _QuoteFinder(HTMLParser):
    """Character ranges of an HTML body that are quoted history, to cut before conversion."""

    _VOID = frozenset(("area", "base", "br", "col", "embed", "hr", "img", "input", "link"))
    _VOID |= {"meta", "param", "source", "track", "wbr"}
    _DEPTH = 512  # open elements tracked; garbage HTML nests without end
    # Subtrees that are someone else's words: Gmail's quote and attribution, Apple Mail's and
    # Thunderbird's cite blockquote, Thunderbird's attribution div (moz-cite-prefix), Yahoo.
    _SKIP_CLASSES = frozenset(("gmail_quote", "gmail_attr", "yahoo_quoted", "moz-cite-prefix"))
    # Outlook puts the history after these, nothing below is new: new Outlook and Outlook on
    # the web (divRplyFwdMsg, appendonsend), desktop's From/Sent block border (#E1E1E1;
    # #B5C4DF in Outlook 2007-2010).
    _STOP_IDS = frozenset(("divrplyfwdmsg", "appendonsend"))
    _OUTLOOK_BORDER = re.compile(r"border-top:\s*solid\s+#(?:e1e1e1|b5c4df)", re.IGNORECASE)

    def __init__(self, html: str) -> None:
        super().__init__(convert_charrefs=True)
        self._starts = [0, *(m.end() for m in re.finditer("\n", html))]
        self._html = html
        self._stack: list[str] = []
        self._skip_depth = -1  # stack depth of the quoted element being skipped
        self._skip_from = 0
        self._block_at = 0  # offset of the latest block element, where a marker paragraph starts
        self.cuts: list[tuple[int, int]] = []
        self.stop: int | None = None

    def _offset(self) -> int:
        line, column = self.getpos()
        return self._starts[line - 1] + column if line - 1 < len(self._starts) else len(self._html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self.stop is not None:
            return
        at = self._offset()
        if tag in ("p", "div", "blockquote", "table", "tr", "li"):
            self._block_at = at
        values = {name: (value or "") for name, value in attrs}
        classes = set(values.get("class", "").lower().split())
        if values.get("id", "").lower() in self._STOP_IDS or (
            tag == "div" and self._OUTLOOK_BORDER.search(values.get("style", ""))
        ):
            self.stop = at if self._skip_depth < 0 else self._skip_from
            raise _Stop
        if tag in self._VOID or len(self._stack) >= self._DEPTH:
            return
        self._stack.append(tag)
        if self._skip_depth < 0 and (
            classes & self._SKIP_CLASSES
            or (tag == "blockquote" and values.get("type", "").lower() == "cite")
        ):
            self._skip_depth = len(self._stack)
            self._skip_from = at

    def handle_endtag(self, tag: str) -> None:
        if self.stop is not None or tag not in self._stack:
            return
        while self._stack:
            if self._stack.pop() == tag:
                break
        if self._skip_depth > len(self._stack):
            close = self._html.find(">", self._offset())
            end = len(self._html) if close < 0 else close + 1
            self.cuts.append((self._skip_from, end))
            self._skip_depth = -1

    def end(self) -> int:
        """Where the kept HTML ends: at a history start, or at a quote never closed."""
        if self.stop is not None:
            return self.stop
        return self._skip_from if self._skip_depth >= 0 else len(self._html)

    def handle_data(self, data: str) -> None:
        if self.stop is None and _MARKER_LINE.search(" ".join(data.split())):
            self.stop = self._block_at if self._skip_depth < 0 else self._skip_from
            raise _Stop


def _html_kept_text(html: str) -> str:
    """Text of an HTML body with the quoted parts and everything after a history start cut."""
    finder = _QuoteFinder(html)
    try:
        finder.feed(html)
        finder.close()
    except _Stop:
        pass
    except Exception:  # garbage HTML: use the ranges found so far
        log.debug("HTML reply parsed in part", exc_info=True)
    end = finder.end()
    pieces = []
    position = 0
    for start, stop in finder.cuts:
        if start >= end:
            break
        pieces.append(html[position:start])
        position = max(position, stop)
    if position < end:
        pieces.append(html[position:end])
    return html_to_text("".join(pieces))
