"""The Python SDK against a real server: built-ins end to end, a traced function deployed
and run, builder parity with Rust, and bad inputs."""

import asyncio
import json
import os
import random

import pytest

import tenebra

HERE = os.path.dirname(__file__)


def test_builtins_end_to_end(client, keys):
    weights = {"weights": [680, 650, 0, 65535, 705]}
    night = {"records": [[0, 0, 120], [3, 120, 150], [0, 150, 210], [4, 210, 240], [0, 240, 300]]}
    for function, inputs in [("weight_stats", weights), ("sleep_quality", night)]:
        got = client.run(keys, function, inputs)
        assert got == tenebra.simulate(function, inputs), function
    assert tenebra.simulate("weight_stats", weights) == {"min": 0, "max": 65535, "avg": 13514}


def test_run_takes_a_bfv_builtin_and_uploads_its_key_set(client, keys):
    # ad_targeting is BFV: its key set is made in the key directory on first use and
    # uploaded by run itself; the scores are checked against the plaintext simulation.
    profile = [0] * 62
    for i in (0, 4, 8, 20, 47, 56):
        profile[i] = 1
    inputs = {"profile": profile}
    want = tenebra.simulate("ad_targeting", inputs)
    assert len(want["top"]) > 0 and len(want["scores"]) > 1000
    assert client.run(keys, "ad_targeting", inputs) == want
    # A task the server refuses is an ApiError with the server's code.
    with pytest.raises(tenebra.ApiError):
        client.run(keys, "no_such_function", {"x": [1]})


@tenebra.circuit(xs=tenebra.enc_u8[3], t=tenebra.enc_u8)
def stats3(xs, t):
    wide = [x.cast(tenebra.u16) for x in xs]
    m = tenebra.max(xs)
    return {"s": tenebra.sum(wide), "m": m, "over": m > t, "clamped": [tenebra.min(x, t) for x in xs]}


def test_traced_function_deployed_and_run(client, keys):
    f = client.deploy(stats3)
    assert (f["name"], f["kind"], f["version"]) == ("stats3", "deployed", 1)
    assert client.deploy(stats3)["version"] == 1, "the same circuit is the same version"
    assert f["at_size"]["cost_cu"] == stats3.cost()
    fetched = client.function_circuit("stats3")
    assert fetched.id == stats3.id and fetched.json() == stats3.json()
    rng = random.Random(7)
    cases = [{"xs": [0, 0, 0], "t": 0}, {"xs": [255, 255, 255], "t": 255},
             {"xs": [200, 255, 7], "t": 100}]
    cases += [{"xs": [rng.randrange(256) for _ in range(3)], "t": rng.randrange(256)}]
    for inputs in cases:
        expected = stats3.simulate(inputs)
        assert client.run(keys, stats3, inputs) == expected, inputs
    assert stats3.simulate({"xs": [200, 255, 7], "t": 100}) == {
        "s": 462, "m": 255, "over": True, "clamped": [100, 100, 7]}


def test_numpy_inputs(client, keys):
    import numpy as np  # test.sh installs it: a missing NumPy fails, it does not skip
    weights = np.array([1, 2, 65535], dtype=np.uint16)
    want = tenebra.simulate("weight_stats", {"weights": [1, 2, 65535]})
    assert tenebra.simulate("weight_stats", {"weights": weights}) == want
    # Encrypted from the array, run on the server, decrypted: the list's result.
    assert client.run(keys, "weight_stats", {"weights": weights}) == want
    # An array is checked like a list: a value out of range is refused.
    with pytest.raises(ValueError, match="weights"):
        keys.encrypt("weight_stats", {"weights": np.array([1, 70000], dtype=np.uint32)})


def _width_for(maximum):
    bits = max(maximum.bit_length(), 2)
    return bits + bits % 2


def weight_stats(n):
    @tenebra.circuit(name="weight_stats", weights=tenebra.enc_u16[n])
    def traced(weights):
        wide = tenebra.Type(f"u{_width_for(n * 65535)}")
        widened = [w.cast(wide) for w in weights]
        return {"min": tenebra.min(weights), "max": tenebra.max(weights), "sum": tenebra.sum(widened)}
    return traced


def test_builder_parity_with_rust():
    # The Rust built-in, traced again in Python: the same bytes, the same id.
    for n in [1, 5, 64, 1024]:
        py, rust = weight_stats(n), tenebra.builtin_circuit("weight_stats", n)
        assert py.json() == rust.json() and py.id == rust.id, n
    # Every operation, against the fixture the Rust builder writes (tenebra-circuit's
    # parity test checks the same file).
    with open(os.path.join(HERE, "parity.json")) as f:
        rust = f.read()
    assert parity().json() == rust
    assert parity().id == tenebra.Circuit.from_json(rust).id


def parity():
    @tenebra.circuit(name="parity", a=tenebra.enc_u8, b=tenebra.enc_u8, v=tenebra.enc_i16[4], c=tenebra.enc_bool)
    def f(a, b, v, c):
        return {
            "arith": [a + b, a - b, a * b, a + 3, 200 - a, 3 * b, -a],
            "bits": [a & b, a | 0x0F, a ^ b, ~a, a << 2, a >> 1],
            "div": [a // 3, b % 7],
            "cmp": [a < b, a <= 5, a > b, a >= 5, a == b, a != 9],
            "pick": [tenebra.where(c, a, b), tenebra.where(a < b, 1, b), tenebra.min(a, b), tenebra.max(a, 17)],
            "vec": [tenebra.sum(v), tenebra.min(v), tenebra.max(v), tenebra.dot(v, [1, -2, 3, 4])],
            "idx": tenebra.argmax(v, tenebra.u8),
            "lut": a.cast(tenebra.Type("u4")).lut([i * i for i in range(16)], tenebra.u8),
            "wide": (a.cast(tenebra.u16) * b.cast(tenebra.u16)).cast(tenebra.u32),
        }
    return f


def test_bad_inputs_raise_clear_errors(keys):
    with pytest.raises(ValueError, match="weights"):
        keys.encrypt("weight_stats", {"weights": [1, 70000]})
    with pytest.raises(ValueError):
        keys.encrypt(stats3, {"xs": [1, 2], "t": 1})
    with pytest.raises(ValueError):
        keys.encrypt(stats3, {"xs": [1, 2, 256], "t": 1})
    with pytest.raises(ValueError):
        keys.encrypt("no_such_function", {})
    with pytest.raises(TypeError, match="truth value"):
        @tenebra.circuit(x=tenebra.enc_u8)
        def branchy(x):
            return {"y": x if x > 3 else x + 1}
    with pytest.raises(ValueError, match="does not fit"):
        @tenebra.circuit(x=tenebra.enc_u8)
        def too_big(x):
            return {"y": x + 300}
    with pytest.raises(ValueError, match="types differ"):
        @tenebra.circuit(x=tenebra.enc_u8, y=tenebra.enc_u16)
        def mixed(x, y):
            return {"z": x + y}
    with pytest.raises(TypeError):
        @tenebra.circuit(x=int)
        def untyped(x):
            return {"y": x}
    # A bad type name fails where it is written.
    with pytest.raises(ValueError, match="u7x"):
        tenebra.Type("u7x")
    with pytest.raises(ValueError):
        tenebra.Type("u65")
    assert tenebra.Type("u18")[3].length == 3


def test_api_errors_and_async(server, client, keys):
    url, token = server
    bad = tenebra.Client(url, "tnb_not_a_real_key")
    with pytest.raises(tenebra.ApiError) as e:
        bad.functions()
    assert e.value.args[0] == 401
    c = tenebra.AsyncClient(url, token)
    quote = asyncio.run(c.quote("weight_stats", 5))
    assert quote["cu"] == tenebra.builtin_circuit("weight_stats", 5).cost()
    # This test's own task is metered at the quoted CU, whatever ran before it.
    before = client.usage(function="weight_stats")["totals"]
    client.run(keys, "weight_stats", {"weights": [1, 2, 3, 4, 5]})
    after = client.usage(function="weight_stats")["totals"]
    assert after["tasks"] == before["tasks"] + 1
    assert after["cu"] == before["cu"] + quote["cu"]
