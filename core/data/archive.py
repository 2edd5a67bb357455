"""Safe import of a dataset packed as a .zip.

Every entry is checked before a single byte is written: no absolute paths, no ``..``,
no symlinks, no encrypted entries or compression we cannot read, and a cap on the total
uncompressed size (zip bombs).  Extraction goes to a temporary sibling folder that is
renamed into place only when complete, so a failure never leaves a half-extracted
dataset that looks usable.  Whatever ``zipfile`` raises on a hostile archive comes out
as an ``ArchiveError`` naming the user's file, never the server's copy of it.

Names: a class is a folder name, so entry names must come out as the user typed them.
Only names flagged UTF-8 (bit 0x800) say their encoding; Info-ZIP's ``zip -r`` writes
UTF-8 bytes without the flag, and Windows Explorer writes its locale's OEM code page
(GBK, cp932, cp866...), also without it.  ``zipfile`` reads all of those as cp437, which
turned ``T恤 t-shirt`` into ``Tµüñ t-shirt``.  ``decode_names`` recovers them; the
safety checks and the extraction both use the recovered names (a cp932 name can hold
the byte 0x5C, ``\\``, inside a character, so checking the cp437 reading is wrong).
"""
from __future__ import annotations

import hashlib
import os
import shutil
import stat
import struct
import tempfile
import unicodedata
import zipfile
import zlib
from pathlib import Path, PurePosixPath

from core.errors import ArchiveError
from core.data.images import IGNORED_NAMES

DEFAULT_MAX_BYTES = 2 * 1024**3
# Part of the extraction folder's name: archives extracted before names were decoded
# (version 1 wrote cp437 mojibake folders) are extracted again instead of reused.
EXTRACT_VERSION = 2

UTF8_FLAG = 0x800
UNICODE_PATH_FIELD = 0x7075  # Info-ZIP: version 1, CRC-32 of the stored name, the name in UTF-8
# Windows Explorer writes names in its locale's OEM code page: GBK in China, cp932 in
# Japan, cp949 in Korea, cp950 (Big5) in Taiwan, cp437 in the US, cp850 in Western Europe,
# cp866 in Russia.  Tried in this order; a tie in plausibility goes to the earlier one.
LEGACY_ENCODINGS = ("gb18030", "cp932", "cp949", "cp950", "cp437", "cp850", "cp866")
READABLE_METHODS = {zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED, zipfile.ZIP_BZIP2, zipfile.ZIP_LZMA}
METHOD_NAMES = {6: "Implode", 9: "Deflate64", 93: "Zstandard", 95: "XZ", 98: "PPMd", 99: "WinZip AES"}


def archive_digest(zip_path: Path) -> str:
    """Names the folder an archive is extracted to: its content, and EXTRACT_VERSION."""
    h = hashlib.sha1(f"extract-v{EXTRACT_VERSION}\0".encode())
    with open(zip_path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:12]


# --- names ---

def decode_names(infos: list[zipfile.ZipInfo]) -> list[str]:
    """Each entry's name as its archiver meant it, NFC-normalised (macOS writes NFD).

    Flagged UTF-8 names are already right.  Otherwise an Info-ZIP Unicode Path field
    whose CRC matches the stored name wins.  The remaining names came from one archiver,
    so they share one encoding: UTF-8 if every one of them is valid UTF-8 (a legacy code
    page almost never produces valid multi-byte UTF-8 by chance), else the legacy code
    page under which the names read most plausibly (``_plausibility``).
    """
    names: list[str | None] = []
    legacy: list[tuple[int, bytes]] = []
    for k, info in enumerate(infos):
        if info.flag_bits & UTF8_FLAG:
            names.append(info.filename)
            continue
        stored = info.orig_filename.encode("cp437")  # zipfile decoded the bytes as cp437: a 1:1 map back
        names.append(_unicode_path(info.extra, stored))
        if names[k] is None:
            legacy.append((k, stored.split(b"\0")[0]))  # zipfile's own reading stops at a NUL too
    enc = guess_encoding([raw for _, raw in legacy])
    for k, raw in legacy:
        names[k] = raw.decode(enc, errors="replace")
    return [unicodedata.normalize("NFC", n) for n in names]


def _unicode_path(extra: bytes, stored: bytes) -> str | None:
    i = 0
    while i + 4 <= len(extra):
        tag, size = struct.unpack_from("<HH", extra, i)
        body = extra[i + 4:i + 4 + size]
        # A CRC that differs means the name was changed by a tool that ignored the field.
        if tag == UNICODE_PATH_FIELD and len(body) > 5 and body[0] == 1 \
                and int.from_bytes(body[1:5], "little") == zlib.crc32(stored):
            try:
                return body[5:].decode("utf-8")
            except UnicodeDecodeError:
                return None
        i += 4 + size
    return None


def guess_encoding(raw_names: list[bytes]) -> str:
    """The encoding of names written without a flag (see ``decode_names``).

    Known limit: EUC-KR keeps its Hangul in the very bytes GB2312 uses for its commonest
    Chinese characters, so a few Korean-only names read equally well as Chinese, and
    the tie goes to GBK; telling them apart would take character frequencies."""
    try:
        for raw in raw_names:
            raw.decode("utf-8")
        return "utf-8"
    except UnicodeDecodeError:
        pass
    # Score each distinct non-ASCII path component once ('/' is never inside a character
    # in any candidate); a few thousand are plenty to tell encodings apart.
    parts = sorted({p for raw in raw_names for p in raw.split(b"/") if not p.isascii()})[:3000]
    best, best_score = "cp437", None  # cp437 decodes every byte: it is always a candidate
    for enc in LEGACY_ENCODINGS:
        try:
            score = sum(_plausibility(p.decode(enc)) for p in parts)
        except UnicodeDecodeError:
            continue
        if best_score is None or score > best_score:
            best, best_score = enc, score
    return best


def _plausibility(text: str) -> int:
    """How much ``text`` reads like a name a person typed, about one point per byte.

    A wrong code page betrays itself: box-drawing and math symbols (cp437 reading GBK),
    half-width katakana and rare ideographs (cp932 or Big5 reading GBK), or letters of
    two alphabets inside one word (``cafВ``: cp866 reading cp437).  Ideographs count
    as real only when they are in the first level of GB2312, Big5 or JIS X 0208 (the few
    thousand everyday characters): multi-byte misreadings mostly land outside them.
    """
    score, scripts = 0, set()
    for ch in text + " ":
        if ch.isascii():
            if ch.isalpha():
                scripts.add("LATIN")
            else:  # a word ends: mixing alphabets inside one word is not how people write
                score -= 3 if _mixed(scripts) else 0
                scripts = set()
            continue
        cat, script = unicodedata.category(ch), _script(ch)
        if cat[0] == "L":
            scripts.add(script)
            if script == "HAN":
                score += 2 if _common_ideograph(ch) else -1
            elif script == "HANGUL":
                score += 2 if _in_range(ch, "euc_kr", 0xB0A1, 0xC8FE) else -1  # KS X 1001's 2,350 syllables
            elif script == "HALFWIDTH":
                score -= 1
            else:
                score += 2 if script == "KANA" else 1
        elif cat[0] in "MZ" or (cat[0] in "NP" and "\u3000" <= ch <= "\uffef"):
            pass  # accents, spaces, full-width digits and CJK punctuation: neutral
        elif cat[0] in "NP":
            score -= 1  # ½ ¿ « are rare in file names
        else:
            score -= 2 if cat[0] == "S" else 3  # symbols, box drawing; controls, private use
    return score


def _script(ch: str) -> str:
    o = ord(ch)
    if 0x4E00 <= o <= 0x9FFF or 0x3400 <= o <= 0x4DBF or 0xF900 <= o <= 0xFAFF:
        return "HAN"
    if 0xAC00 <= o <= 0xD7A3 or 0x1100 <= o <= 0x11FF or 0x3130 <= o <= 0x318F:
        return "HANGUL"
    if 0x3040 <= o <= 0x30FF:
        return "KANA"
    if 0xFF61 <= o <= 0xFF9F:
        return "HALFWIDTH"
    return unicodedata.name(ch, "UNKNOWN").split(" ")[0]  # LATIN, CYRILLIC, GREEK...


def _mixed(scripts: set[str]) -> bool:
    # Latin mixes with CJK ("T恤", "iPhone壁纸") and Japanese mixes kanji with kana;
    # any other pair inside one word is a misreading.
    rest = scripts - {"LATIN"} if scripts & {"HAN", "KANA", "HANGUL"} else scripts
    return len(rest - {"KANA"} if "HAN" in rest else rest) > 1


def _in_range(ch: str, enc: str, lo: int, hi: int) -> bool:
    try:
        b = ch.encode(enc)
    except UnicodeEncodeError:
        return False
    return len(b) == 2 and lo <= int.from_bytes(b, "big") <= hi


# First levels: GB2312 (simplified), Big5 (traditional), JIS X 0208 (Japanese).
_LEVEL1 = (("gb2312", 0xB0A1, 0xD7FE), ("big5", 0xA440, 0xC67E), ("shift_jis", 0x889F, 0x9872))


def _common_ideograph(ch: str) -> bool:
    return any(_in_range(ch, enc, lo, hi) for enc, lo, hi in _LEVEL1)


# --- checks and extraction ---

def _safe_parts(info: zipfile.ZipInfo, name: str, shown: str) -> tuple[str, ...]:
    """The entry's path components, after refusing anything that would land outside the
    target.  Backslashes are separators (old Windows tools write them), which is only
    safe to decide on the decoded name."""
    norm = name.replace("\\", "/")
    parts = PurePosixPath(norm).parts
    if norm.startswith("/") or (len(norm) > 1 and norm[1] == ":") or ".." in parts:
        raise ArchiveError(f"refused {shown}: entry {name!r} would be written outside the target folder")
    if stat.S_ISLNK(info.external_attr >> 16):
        raise ArchiveError(f"refused {shown}: entry {name!r} is a symbolic link")
    return parts


def _skipped(parts: tuple[str, ...]) -> bool:
    """OS metadata (__MACOSX/, ._ AppleDouble files, Thumbs.db) is not the user's data."""
    return not parts or any(p in IGNORED_NAMES or p.startswith("._") for p in parts)


def _why(e: BaseException) -> str:
    if isinstance(e, EOFError):
        return "it ends too early: cut short?"
    return " ".join(str(e).split())[:200] or type(e).__name__


def extract_zip(zip_path: str | os.PathLike, target_dir: str | os.PathLike, max_bytes: int = DEFAULT_MAX_BYTES,
                progress=None, display_name: str | None = None) -> Path:
    """Extract ``zip_path`` into ``target_dir`` (which must not exist yet) and return the
    dataset root inside it (a single wrapping top folder is unwrapped).

    ``progress(done_bytes, total_bytes)`` is called while extracting.  Messages name the
    archive as ``display_name`` (the user's own file name, for an upload saved under
    another name), else by its file name.
    """
    zip_path, target_dir = Path(zip_path), Path(target_dir)
    shown = display_name or zip_path.name
    if not zip_path.is_file():
        raise ArchiveError(f"no such file: {shown}")
    try:
        zf = zipfile.ZipFile(zip_path)
        infos = zf.infolist()
    except Exception as e:  # noqa: BLE001 - BadZipFile, a flagged name that is not UTF-8, struct.error...
        with open(zip_path, "rb") as f:
            cut = f.read(4) == b"PK\x03\x04" and isinstance(e, zipfile.BadZipFile)
        why = "it starts as a zip but its end, the index of its entries, is missing: cut short?" if cut else _why(e)
        raise ArchiveError(f"{shown} is not a readable zip archive ({why})") from None
    with zf:
        plan = []
        for info, name in zip(infos, decode_names(infos)):
            parts = _safe_parts(info, name, shown)
            if _skipped(parts):
                continue
            is_dir = info.is_dir() or name.replace("\\", "/").endswith("/")
            if not is_dir and info.flag_bits & 0x1:
                raise ArchiveError(f"{shown} is password-protected (entry {name!r} is encrypted): "
                                   "extract it and zip it again without a password")
            if not is_dir and info.compress_type not in READABLE_METHODS:
                method = METHOD_NAMES.get(info.compress_type, f"method {info.compress_type}")
                raise ArchiveError(f"{shown} uses {method} compression (entry {name!r}), which this app cannot "
                                   "read: zip it again with ordinary (Deflate) compression")
            plan.append((info, parts, is_dir))
        total = sum(i.file_size for i in infos)
        if total > max_bytes:
            raise ArchiveError(f"refused {shown}: it unpacks to {total / 2**30:.2f} GiB, over the cap of {max_bytes / 2**30:.2f} GiB")
        target_dir.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".extract-", dir=target_dir.parent))
        try:
            done = 0
            for info, parts, is_dir in plan:
                _extract_one(zf, info, tmp.joinpath(*parts), is_dir, shown, "/".join(parts))
                done += 0 if is_dir else info.file_size
                if progress and not is_dir:
                    progress(done, total)
            try:
                os.replace(tmp, target_dir)
            except OSError as e:
                raise ArchiveError(f"{shown} could not be extracted here: {e.strerror or e}") from None
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
    return unwrap_single_folder(target_dir)


def _extract_one(zf: zipfile.ZipFile, info: zipfile.ZipInfo, dest: Path, is_dir: bool, shown: str, entry: str) -> None:
    try:
        if is_dir:
            dest.mkdir(parents=True, exist_ok=True)
            return
        dest.parent.mkdir(parents=True, exist_ok=True)
        with zf.open(info) as src, open(dest, "wb") as out:
            shutil.copyfileobj(src, out, 1 << 20)
    except OSError as e:  # this disk: full, read-only, a name too long for the filesystem, a file where a folder goes
        raise ArchiveError(f"{shown} could not be extracted: entry {entry!r}: {e.strerror or e}") from None
    except Exception as e:  # noqa: BLE001 - bad CRC-32, cut short, corrupt compressed data, encrypted...
        raise ArchiveError(f"{shown} is damaged: entry {entry!r}: {_why(e)}") from None


def unwrap_single_folder(root: Path) -> Path:
    """A zip of ``mydata/`` holds one folder: the dataset is inside it."""
    while True:
        entries = [p for p in root.iterdir() if not p.name.startswith(".") and p.name not in IGNORED_NAMES]
        if len(entries) == 1 and entries[0].is_dir() and not _looks_like_dataset_split(entries[0].name):
            root = entries[0]
        else:
            return root


def _looks_like_dataset_split(name: str) -> bool:
    return name.lower() in {"train", "val", "valid", "validation"}
