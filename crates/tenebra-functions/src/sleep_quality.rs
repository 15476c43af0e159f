//! `sleep_quality`: a sleep score from 1 (excellent) to 5 (poor) from encrypted sleep records.
//!
//! Input: 1 to 64 records `[stage, start, end]`: stage is 4 bits (0 in bed, 1 asleep
//! (unspecified), 2 awake, 3 core, 4 deep, 5 REM; other values count as neither in bed nor
//! asleep), start and end are minutes (u16).
//! - duration = end - start if end >= start, else 0;
//! - TIB = total duration of stage-0 records; TST = total duration of stages 1, 3, 4, 5;
//! - SOL = start of the first sleep record - start of the first stage-0 record (list order),
//!   0 if either is missing or the difference would be negative;
//! - categories 0..=3 for TST (> 420, > 360, > 300), efficiency (100 TST vs 85/75/65 TIB,
//!   3 when TIB = 0) and SOL (<= 15, <= 30, <= 60); raw = their sum;
//! - score = 1 + floor(4 raw / 9).
//!
//! Under encryption each category is a count of threshold tests, e.g. the TST category is
//! `[TST <= 300] + [TST <= 360] + [TST <= 420]`, so no branch is needed; a stage's class is a
//! 4-bit lookup table (one PBS), and "first record of a kind" is a one-hot mask built from a
//! prefix OR of booleans.

use serde_json::{json, Value};
use tenebra_circuit::builder::{dot, sum, Builder, Var};
use tenebra_circuit::{ScalarType, ValidCircuit};

use crate::{int_array, int_in, only_keys, width_for, Builtin};

pub const BUILTIN: Builtin = Builtin {
    name: "sleep_quality",
    summary: "sleep quality score (1 excellent .. 5 poor) from encrypted sleep records",
    signature: "{\"records\": [[stage u4, start u16, end u16]; 1..=64]} -> {\"score\": u8}",
    sizes: 1..=64,
    build,
    encode,
    finish,
    reference,
};

const STAGE: ScalarType = ScalarType::Uint(4);
const MINUTES: ScalarType = ScalarType::Uint(16);

fn is_sleep(stage: u64) -> bool {
    matches!(stage, 1 | 3 | 4 | 5)
}

fn score_of(raw: u64) -> u64 {
    1 + 4 * raw / 9
}

/// One-hot mask of the first `true` of `flags`, and whether there is one.
fn first_of(flags: &[Var]) -> (Vec<Var>, Var) {
    let mut seen = flags[0].clone();
    let mut firsts = vec![flags[0].clone()];
    for f in &flags[1..] {
        firsts.push(f & &!&seen);
        seen = &seen | f;
    }
    (firsts, seen)
}

fn build(n: u32) -> ValidCircuit {
    let b = Builder::new("sleep_quality");
    let stage = b.input_vec("stage", STAGE, n);
    let start = b.input_vec("start", MINUTES, n);
    let end = b.input_vec("end", MINUTES, n);
    // Differences of minutes, signed: their sign is one PBS away.
    let diff_ty = ScalarType::Int(18);
    let total = ScalarType::Uint(width_for(u64::from(n) * 65535));
    // Signed and wide enough for 20 * TST - 17 * TIB.
    let scaled = ScalarType::Int(width_for(u64::from(n) * 65535 * 20 * 2));

    let bed_table: Vec<i128> = (0..16).map(|s| i128::from(s == 0)).collect();
    let sleep_table: Vec<i128> = (0..16).map(|s| i128::from(is_sleep(s))).collect();
    let mut bed = Vec::new();
    let mut sleep = Vec::new();
    let mut bed_minutes = Vec::new();
    let mut sleep_minutes = Vec::new();
    let starts: Vec<Var> = start.iter().map(|s| s.cast(diff_ty)).collect();
    for i in 0..n as usize {
        let is_bed = stage[i].lut(&bed_table, ScalarType::Bool);
        let is_sleep = stage[i].lut(&sleep_table, ScalarType::Bool);
        let diff = &end[i].cast(diff_ty) - &starts[i];
        let valid = diff.ge(0);
        // Exact when valid: 0 <= diff <= 65535.
        let duration = diff.cast(MINUTES);
        bed_minutes.push((&is_bed & &valid).select(&duration, 0).cast(total));
        sleep_minutes.push((&is_sleep & &valid).select(&duration, 0).cast(total));
        bed.push(is_bed);
        sleep.push(is_sleep);
    }
    let tib = sum(&bed_minutes);
    let tst = sum(&sleep_minutes);

    // SOL in one sum: the first sleep record's start, plus the one's complement of the
    // first bed record's start, plus 1 when there is one (-x = !x + 1). At most one term of
    // each kind is non-zero.
    let (first_bed, any_bed) = first_of(&bed);
    let (first_sleep, any_sleep) = first_of(&sleep);
    let mut terms: Vec<Var> = Vec::new();
    for (i, s) in starts.iter().enumerate() {
        terms.push(first_sleep[i].select(s, 0));
        terms.push(first_bed[i].select(&!s, 0));
    }
    terms.push(any_bed.cast(diff_ty));
    let sol = sum(&terms);
    let sol_valid = &(&any_bed & &any_sleep) & &sol.ge(0);

    let tib_zero = tib.eq(0);
    let scaled_totals = [tib.cast(scaled), tst.cast(scaled)];
    // 100 TST <= 85 TIB  <=>  17 TIB - 20 TST >= 0; 100/75 = 4/3; 100/65 = 20/13. Each is a
    // dot product with small constants (shifted copies, one carry propagation) and a sign test.
    let efficiency = [(17, 20), (3, 4), (13, 20)].map(|(a, b)| dot(&scaled_totals, &[a, -b]).ge(0));
    let mut flags: Vec<Var> = vec![tst.le(300), tst.le(360), tst.le(420)];
    flags.extend(efficiency.iter().map(|e| e | &tib_zero));
    flags.extend([15, 30, 60].map(|t| &sol.gt(t) & &sol_valid));
    let counts: Vec<Var> = flags.iter().map(|f| f.cast(ScalarType::Uint(4))).collect();
    let raw = sum(&counts);
    let table: Vec<i128> = (0..16)
        .map(|r| i128::from(score_of(r.min(9)) as u8))
        .collect();
    b.output("score", &raw.lut(&table, ScalarType::Uint(8)));
    match b.build() {
        Ok(c) => c,
        Err(e) => unreachable!("the sleep_quality circuit is valid: {e}"),
    }
}

fn records(input: &Value) -> Result<Vec<[u64; 3]>, String> {
    only_keys(input, &["records"])?;
    int_array(input.get("records"), "records", BUILTIN.sizes.clone())?
        .iter()
        .enumerate()
        .map(|(i, r)| {
            let fields = r
                .as_array()
                .filter(|a| a.len() == 3)
                .ok_or_else(|| format!("records[{i}] must be [stage, start, end], got {r}"))?;
            Ok([
                int_in(&fields[0], &format!("records[{i}] stage"), 0, 15)?,
                int_in(&fields[1], &format!("records[{i}] start"), 0, 65535)?,
                int_in(&fields[2], &format!("records[{i}] end"), 0, 65535)?,
            ])
        })
        .collect()
}

fn encode(input: &Value) -> Result<(u32, Vec<u64>), String> {
    let r = records(input)?;
    let mut values: Vec<u64> = r.iter().map(|x| x[0]).collect();
    values.extend(r.iter().map(|x| x[1]));
    values.extend(r.iter().map(|x| x[2]));
    Ok((r.len() as u32, values))
}

fn finish(_: u32, outputs: &[Vec<u64>]) -> Value {
    json!({"score": outputs.first().and_then(|o| o.first()).copied().unwrap_or(0)})
}

fn reference(input: &Value) -> Result<Value, String> {
    let r = records(input)?;
    let duration = |x: &[u64; 3]| x[2].saturating_sub(x[1]);
    let tib: u64 = r.iter().filter(|x| x[0] == 0).map(duration).sum();
    let tst: u64 = r.iter().filter(|x| is_sleep(x[0])).map(duration).sum();
    let first_bed = r.iter().find(|x| x[0] == 0).map(|x| x[1]);
    let first_sleep = r.iter().find(|x| is_sleep(x[0])).map(|x| x[1]);
    let sol = match (first_bed, first_sleep) {
        (Some(b), Some(s)) if s >= b => s - b,
        _ => 0,
    };
    let tst_cat = if tst > 420 {
        0
    } else if tst > 360 {
        1
    } else if tst > 300 {
        2
    } else {
        3
    };
    let eff_cat = if tib == 0 {
        3
    } else if 100 * tst > 85 * tib {
        0
    } else if 100 * tst > 75 * tib {
        1
    } else if 100 * tst > 65 * tib {
        2
    } else {
        3
    };
    let sol_cat = if sol <= 15 {
        0
    } else if sol <= 30 {
        1
    } else if sol <= 60 {
        2
    } else {
        3
    };
    Ok(json!({"score": score_of(tst_cat + eff_cat + sol_cat)}))
}
