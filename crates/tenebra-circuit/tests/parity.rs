//! The Python SDK's tracer must make the same circuit as this builder: this test builds a
//! circuit using every operation and checks it against `python/tests/parity.json`, which the
//! Python tests compare their traced version with (set TENEBRA_WRITE_FIXTURES=1 to rewrite).

use tenebra_circuit::builder::{argmax, dot, max_of, min_of, sum, Builder};
use tenebra_circuit::ScalarType::{Bool, Int, Uint};

#[test]
fn parity_fixture_matches_the_rust_builder() {
    let bl = Builder::new("parity");
    let a = bl.input("a", Uint(8));
    let b = bl.input("b", Uint(8));
    let v = bl.input_vec("v", Int(16), 4);
    let c = bl.input("c", Bool);
    let arith = vec![&a + &b, &a - &b, &a * &b, &a + 3, -&a + 200, &b * 3, -&a];
    let bits = vec![&a & &b, &a | 0x0F, &a ^ &b, !&a, &a << 2, &a >> 1];
    let div = vec![&a / 3, &b % 7];
    let cmp = vec![a.lt(&b), a.le(5), a.gt(&b), a.ge(5), a.eq(&b), a.ne(9)];
    let pick = vec![
        c.select(&a, &b),
        a.lt(&b).select(1, &b),
        a.min(&b),
        a.max(17),
    ];
    let vec_ = vec![sum(&v), min_of(&v), max_of(&v), dot(&v, &[1, -2, 3, 4])];
    let idx = argmax(&v, Uint(8));
    let squares: Vec<i128> = (0..16).map(|i| i * i).collect();
    let lut = a.cast(Uint(4)).lut(&squares, Uint(8));
    let wide = (&a.cast(Uint(16)) * &b.cast(Uint(16))).cast(Uint(32));
    bl.output_vec("arith", &arith);
    bl.output_vec("bits", &bits);
    bl.output_vec("div", &div);
    bl.output_vec("cmp", &cmp);
    bl.output_vec("pick", &pick);
    bl.output_vec("vec", &vec_);
    bl.output("idx", &idx);
    bl.output("lut", &lut);
    bl.output("wide", &wide);
    let json = String::from_utf8(bl.build().unwrap().canonical_json()).unwrap();

    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../python/tests/parity.json"
    );
    if std::env::var_os("TENEBRA_WRITE_FIXTURES").is_some() {
        std::fs::write(path, &json).unwrap();
    }
    let fixture = std::fs::read_to_string(path).unwrap();
    assert_eq!(
        fixture, json,
        "python/tests/parity.json is stale: rerun with TENEBRA_WRITE_FIXTURES=1"
    );
}
