"""Compressed answers: which encoding a client's Accept-Encoding asks for, and what goes out."""

from __future__ import annotations

import gzip
import zlib

import pytest

from modelserve.protocol.compression import MIN_BYTES, accepted, compress, compressed


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip, deflate", "gzip"),
        ("deflate, gzip", "gzip"),
        ("gzip;q=0.5, deflate", "deflate"),
        ("GZIP", "gzip"),
        ("br", None),
        ("*", "gzip"),
        ("*;q=0", None),
        ("gzip;q=0, *", "deflate"),
        ("gzip;q=0", None),
        ("gzip;q=nonsense", None),
        ("br, gzip ; q=0.8", "gzip"),
    ],
)
def test_the_encoding_follows_the_clients_weights(header: str | None, expected: str | None) -> None:
    assert accepted(header) == expected


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_large_answer_goes_out_compressed_and_inflates_to_itself(encoding: str) -> None:
    body = b'{"outputs": [' + b"1.2345678, " * 4000 + b"0]}"

    sent, used = await compressed(body, encoding)

    assert used == encoding
    assert len(sent) < len(body) // 4
    assert (gzip.decompress(sent) if encoding == "gzip" else zlib.decompress(sent)) == body


async def test_a_small_answer_goes_out_as_it_is() -> None:
    body = b"x" * (MIN_BYTES - 1)
    assert await compressed(body, "gzip") == (body, None)
    assert compress(body, "gzip") != body  # it could be compressed: it is left alone on purpose
