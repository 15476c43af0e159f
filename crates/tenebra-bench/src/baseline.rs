//! Hand-written tfhe-rs code a typical application would write for the built-ins: the
//! baseline the engine is measured against. High-level API, default parameters, the same
//! keys; a sequential fold with a wide accumulator and an encrypted scalar division for
//! `weight_stats`, per-record `eq`/`select` and comparisons against trivially encrypted
//! thresholds for `sleep_quality`.

use tfhe::prelude::*;
use tfhe::{ClientKey, FheBool, FheUint16, FheUint32, FheUint8};

/// Encrypted weights, as an application would hold them.
pub struct Weights(pub Vec<FheUint16>);

pub fn encrypt_weights(ck: &ClientKey, w: &[u64]) -> Weights {
    Weights(
        w.iter()
            .map(|&x| FheUint16::encrypt(x as u16, ck))
            .collect(),
    )
}

/// `(min, max, avg)`; the server key must be set on this thread.
pub fn weight_stats(w: &Weights) -> (FheUint16, FheUint16, FheUint16) {
    let n = w.0.len() as u32;
    let mut min = w.0[0].clone();
    let mut max = w.0[0].clone();
    let mut sum: FheUint32 = w.0[0].clone().cast_into();
    for x in &w.0[1..] {
        min = min.min(x);
        max = max.max(x);
        sum += FheUint32::cast_from(x.clone());
    }
    let avg: FheUint16 = (sum / n).cast_into();
    (min, max, avg)
}

pub fn decrypt_weight_stats(ck: &ClientKey, r: &(FheUint16, FheUint16, FheUint16)) -> [u64; 3] {
    let d = |x: &FheUint16| u64::from(FheDecrypt::<u16>::decrypt(x, ck));
    [d(&r.0), d(&r.1), d(&r.2)]
}

/// Encrypted sleep records: stage (u8), start and end (u16).
pub struct Night(pub Vec<(FheUint8, FheUint16, FheUint16)>);

pub fn encrypt_night(ck: &ClientKey, records: &[[u64; 3]]) -> Night {
    Night(
        records
            .iter()
            .map(|r| {
                (
                    FheUint8::encrypt(r[0] as u8, ck),
                    FheUint16::encrypt(r[1] as u16, ck),
                    FheUint16::encrypt(r[2] as u16, ck),
                )
            })
            .collect(),
    )
}

/// The sleep score; the server key must be set on this thread.
pub fn sleep_quality(night: &Night) -> FheUint8 {
    let t8 = |v: u8| FheUint8::encrypt_trivial(v);
    let t16 = |v: u16| FheUint16::encrypt_trivial(v);
    let t32 = |v: u32| FheUint32::encrypt_trivial(v);
    let (zero16, zero32) = (t16(0), t32(0));
    let mut tib = t32(0);
    let mut tst = t32(0);
    let mut found_bed = FheBool::encrypt_trivial(false);
    let mut found_sleep = FheBool::encrypt_trivial(false);
    let mut bed_start = t16(0);
    let mut sleep_start = t16(0);
    for (stage, start, end) in &night.0 {
        let valid = end.ge(start);
        let duration: FheUint32 = valid.select(&(end - start), &zero16).cast_into();
        let is_bed = stage.eq(&t8(0));
        let is_sleep = stage.eq(&t8(1)) | stage.eq(&t8(3)) | stage.eq(&t8(4)) | stage.eq(&t8(5));
        tib += is_bed.select(&duration, &zero32);
        tst += is_sleep.select(&duration, &zero32);
        bed_start = (&is_bed & !&found_bed).select(start, &bed_start);
        sleep_start = (&is_sleep & !&found_sleep).select(start, &sleep_start);
        found_bed |= is_bed;
        found_sleep |= is_sleep;
    }
    let sol_ok = &(&found_bed & &found_sleep) & sleep_start.ge(&bed_start);
    let sol = sol_ok.select(&(&sleep_start - &bed_start), &zero16);
    let c = [t8(0), t8(1), t8(2), t8(3)];
    let tst_cat = tst.gt(&t32(420)).select(
        &c[0],
        &tst.gt(&t32(360))
            .select(&c[1], &tst.gt(&t32(300)).select(&c[2], &c[3])),
    );
    let tst100 = &tst * 100u32;
    let eff = tib.eq(&zero32).select(
        &c[3],
        &tst100.gt(&(&tib * 85u32)).select(
            &c[0],
            &tst100
                .gt(&(&tib * 75u32))
                .select(&c[1], &tst100.gt(&(&tib * 65u32)).select(&c[2], &c[3])),
        ),
    );
    let sol_cat = sol.le(&t16(15)).select(
        &c[0],
        &sol.le(&t16(30))
            .select(&c[1], &sol.le(&t16(60)).select(&c[2], &c[3])),
    );
    let raw = tst_cat + eff + sol_cat;
    (raw * 4u8) / 9u8 + 1u8
}

pub fn decrypt_score(ck: &ClientKey, s: &FheUint8) -> u64 {
    u64::from(FheDecrypt::<u8>::decrypt(s, ck))
}
