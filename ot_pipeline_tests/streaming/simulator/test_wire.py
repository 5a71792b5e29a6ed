"""The simulator's block encoder writes exactly the bytes of the event contract's encoder."""

from __future__ import annotations

from datetime import UTC, datetime

import numpy as np
import pytest

from streaming.events import decode_avro, encode_avro_many
from streaming.simulator.cli import parse_args
from streaming.simulator.generator import VALID, ReadingBlock, iter_delivered, make_simulator
from streaming.simulator.wire import AvroBlockEncoder

START = datetime(2026, 3, 2, 8, tzinfo=UTC)


def test_block_encoder_is_byte_identical_to_encode_avro_many() -> None:
    sim = make_simulator(12, START, 0.2, 1.0, seed=8, chaos="heavy")
    block = ReadingBlock.concat([b for b, _ in iter_delivered(sim, 300)])
    good = block.take(np.nonzero(block.malformed == VALID)[0])
    # edge cases of the variable-length fields: 1-digit and 19-digit seq, ts before 1970
    edge = good.take(np.arange(4))
    edge.seq = np.array([0, 7, 2**62, 123456789012], dtype=np.int64)
    edge.ts = np.array([0, -1, 1, -(2**40)], dtype=np.int64)
    edge.status = np.array([0, 1, 2, 3], dtype=np.int64)
    edge.quality = np.array([0, 1, 2, 0], dtype=np.int64)
    both = ReadingBlock.concat([good, edge])
    encoder = AvroBlockEncoder(sim.fleet)
    ours = encoder.encode(both)
    reference = encode_avro_many([encoder.record(both, i) for i in range(len(both))])
    assert ours == reference
    assert decode_avro(ours[-2])["seq"] == 2**62
    assert encoder.key_list(both)[0] == str(encoder.record(both, 0)["machine_id"]).encode()


def test_cli_options_choose_the_clock_and_reject_nonsense() -> None:
    ff = parse_args(["--machines", "5", "--hours", "1", "--start", "2026-03-02T08:00:00Z"])
    assert ff.fast_forward and ff.start == START and ff.machines == 5
    rt = parse_args(["--rate", "500", "--duration", "3", "--fault-rate", "spike=2.5"])
    assert not rt.fast_forward and rt.rate == 500 and rt.rates == {"spike": 2.5}
    for bad in (["--machines", "0"], ["--start", "2026-03-02"], ["--fault-rate", "meteor=1"],
                ["--chaos", "wild"]):  # fmt: skip
        with pytest.raises(SystemExit):
            parse_args(bad)
