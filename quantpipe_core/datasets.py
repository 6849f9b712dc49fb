"""The labelled data QuantPipe measures accuracy on, all available offline.

- Digits: scikit-learn's 8x8 handwritten digits (1,797 images, ten classes), split once with a
  fixed seed into the training part (`scripts/train_digits_vit.py`) and the held-out part that
  accuracy profiles use.
- Sentences: real English from the docstrings of Python's standard library (the first sentence
  of each public function's or class's docstring), for sentence-embedding fidelity. The set
  depends on the Python version that builds it; profiles record the count they used.
"""

from __future__ import annotations

import importlib
import inspect
import random
import re
import warnings
from dataclasses import dataclass

import torch

DIGITS_TEST_FRACTION = 0.4
DIGITS_SPLIT_SEED = 0

_MODULE_NAMES = """
    abc argparse array ast asyncio base64 bisect bz2 calendar cmath cmd code codecs collections
    colorsys concurrent.futures configparser contextlib copy csv dataclasses datetime decimal
    difflib dis doctest email email.message email.utils enum filecmp fnmatch fractions ftplib
    functools gc getopt gettext glob graphlib gzip hashlib heapq hmac html html.parser
    http.client http.cookiejar http.cookies http.server imaplib importlib inspect io ipaddress
    itertools json keyword linecache locale logging logging.handlers lzma mailbox math mimetypes
    multiprocessing numbers operator optparse os os.path pathlib pdb pickle pkgutil platform
    poplib pprint profile pstats queue random re reprlib runpy sched secrets selectors shelve
    shlex shutil signal smtplib socket socketserver sqlite3 ssl statistics string struct
    subprocess sysconfig tarfile tempfile textwrap threading timeit tokenize trace traceback
    tracemalloc types typing unicodedata unittest urllib.parse urllib.request uuid warnings wave
    weakref wsgiref.simple_server xml.dom.minidom xml.etree.ElementTree xmlrpc.client zipfile
    zoneinfo
"""
STDLIB_MODULES = tuple(_MODULE_NAMES.split())


@dataclass(frozen=True)
class Digits:
    """Normalized images (N, 1, 8, 8) in [-1, 1] and their labels (N,)."""

    images: torch.Tensor
    labels: torch.Tensor


def digits(part: str) -> Digits:
    """The ``"train"`` or ``"test"`` part of the fixed, stratified digits split."""
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    if part not in ("train", "test"):
        raise ValueError(f"digits part must be 'train' or 'test', got {part!r}")
    data = load_digits()
    train_x, test_x, train_y, test_y = train_test_split(
        data.images,
        data.target,
        test_size=DIGITS_TEST_FRACTION,
        stratify=data.target,
        random_state=DIGITS_SPLIT_SEED,
    )
    images, labels = (train_x, train_y) if part == "train" else (test_x, test_y)
    pixels = torch.tensor(images, dtype=torch.float32)[:, None] / 16.0
    return Digits((pixels - 0.5) / 0.5, torch.tensor(labels, dtype=torch.long))


_SENTENCE = re.compile(r"^[A-Z][A-Za-z0-9 ,;:'()\-]+\.$")


def stdlib_sentences(count: int | None = None, seed: int = 0) -> list[str]:
    """Distinct first sentences of standard-library docstrings (6 to 40 words), shuffled by `seed`.

    `count` takes the first `count` of the shuffled list (all of them if ``None``).
    """
    found: set[str] = set()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for module_name in STDLIB_MODULES:
            module = importlib.import_module(module_name)
            for obj in _documented(module):
                sentence = _first_sentence(inspect.getdoc(obj) or "")
                if sentence and 6 <= len(sentence.split()) <= 40:
                    found.add(sentence)
    sentences = sorted(found)
    random.Random(seed).shuffle(sentences)
    if count is not None and count > len(sentences):
        raise ValueError(
            f"asked for {count} sentences, the standard library gives {len(sentences)}"
        )
    return sentences[:count]


def _documented(module: object) -> list[object]:
    """The module's public classes and functions, and the public methods of those classes."""
    objects = []
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not (inspect.isclass(obj) or inspect.isroutine(obj)):
            continue
        objects.append(obj)
        if inspect.isclass(obj):
            objects += [
                member for member_name, member in sorted(vars(obj).items())
                if not member_name.startswith("_") and inspect.isroutine(member)
            ]
    return objects


def _first_sentence(doc: str) -> str | None:
    paragraph = " ".join(doc.split("\n\n")[0].split())
    end = paragraph.find(". ")
    sentence = paragraph if end < 0 else paragraph[: end + 1]
    return sentence if _SENTENCE.match(sentence) else None
