//! Commands that need no server: key generation, the built-ins' list and circuits, and the
//! client's and server's halves of a run on files (`simulate`, `encrypt`, `eval`,
//! `decrypt`).

use std::io::Write;
use std::path::Path;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use tenebra_circuit::AnyCircuit;
use tenebra_client::{decrypt, encrypt, ClientKeys};
use tenebra_engine::scheme::{EvalKeys, InputHeader};
use tenebra_engine::{Progress, RunOptions, ServerKeys};
use tenebra_functions::{builtin, AnyBuiltin};

use crate::io::{load_client_keys, read_json, read_limited, write_file, BUNDLE_LIMIT};
use crate::output::{ops_bar, print_json};

/// `tenebra keys generate`.
/// `tenebra keys export`: the upload file of a key set (its server and public keys).
pub fn keys_export(keys: &Path, out: &Path) -> Result<()> {
    let upload = tenebra_engine::keys::read_upload(keys)
        .with_context(|| format!("reading the key set in {}", keys.display()))?;
    let (server, public) = tenebra_engine::keys::unpack_upload(&upload)?;
    let id = tenebra_engine::KeySetId::of(server, public);
    write_file(out, &upload)?;
    println!("{id}");
    Ok(())
}

pub fn keys_generate(out: &Path) -> Result<()> {
    if out.join(tenebra_engine::keys::MANIFEST_FILE).exists() {
        bail!(
            "{} already holds a key set; choose another directory",
            out.display()
        );
    }
    let started = Instant::now();
    let keys = ClientKeys::generate(out)
        .with_context(|| format!("generating keys into {}", out.display()))?;
    eprintln!(
        "generated key set {} in {:.1} s",
        keys.id(),
        started.elapsed().as_secs_f64()
    );
    println!("{}", keys.id());
    Ok(())
}

/// `tenebra functions list` without a server: the built-ins.
pub fn functions_list() -> Result<()> {
    let mut out = std::io::stdout().lock();
    for f in tenebra_functions::bfv_builtins() {
        let plan = f.circuit().plan();
        writeln!(out, "{}  {}", f.name, f.summary)?;
        writeln!(out, "    signature: {}", f.signature)?;
        writeln!(
            out,
            "    BFV: ring degree {}, plaintext modulus {}, {} Galois keys; cost: {} CU",
            plan.degree,
            plan.plain_modulus,
            plan.galois_keys(),
            f.circuit().cost_cu()
        )?;
    }
    for f in tenebra_functions::builtins() {
        let (lo, hi) = (*f.sizes.start(), *f.sizes.end());
        let cost_lo = f.cost(lo)?;
        let cost_hi = f.cost(hi)?;
        writeln!(out, "{}  {}", f.name, f.summary)?;
        writeln!(out, "    signature: {}", f.signature)?;
        writeln!(
            out,
            "    cost: {} CU for size {lo} ({} ops) .. {} CU for size {hi} ({} ops)",
            cost_lo.cu, cost_lo.ops, cost_hi.cu, cost_hi.ops
        )?;
    }
    Ok(())
}

/// `tenebra functions show`: a built-in's canonical circuit JSON.
pub fn functions_show(function: &str, size: u32) -> Result<()> {
    let c = builtin(function)?.circuit(size)?;
    let mut out = std::io::stdout().lock();
    out.write_all(&c.canonical_json())?;
    writeln!(out)?;
    Ok(())
}

/// `tenebra simulate`.
pub fn simulate(function: &str, input: &Path) -> Result<()> {
    print_json(&builtin(function)?.simulate(&read_json(input)?)?)
}

/// `tenebra encrypt`.
pub fn encrypt_file(keys: &Path, function: &str, input: &Path, out: &Path) -> Result<()> {
    let json = read_json(input)?;
    let bytes = match builtin(function)? {
        AnyBuiltin::Bfv(f) => tenebra_client::bfv::encrypt(keys, f, &json)?,
        AnyBuiltin::Tfhe(f) => {
            // Check the input before loading keys: mistakes surface at once.
            f.encode(&json)?;
            encrypt(&load_client_keys(keys)?, f, &json)?
        }
    };
    write_file(out, &bytes)
}

/// `tenebra decrypt`.
pub fn decrypt_file(keys: &Path, function: &str, input: &Path) -> Result<()> {
    let bytes = read_limited(input, BUNDLE_LIMIT)?;
    print_json(&match builtin(function)? {
        AnyBuiltin::Bfv(f) => tenebra_client::bfv::decrypt(keys, f, &bytes)?,
        AnyBuiltin::Tfhe(f) => decrypt(&load_client_keys(keys)?, f, &bytes)?,
    })
}

/// `tenebra eval`: the server's half, on files, through the engine's one entry point.
pub fn eval(keys: &Path, function: &str, input: &Path, out: &Path) -> Result<()> {
    let bytes = read_limited(input, BUNDLE_LIMIT)?;
    let f = builtin(function)?;
    // Header checks first: a wrong file is reported before the key takes a second to load.
    let header = InputHeader::read(&bytes)?;
    if header.function() != f.name() {
        bail!(
            "this file was made for function `{}`, not `{}`",
            header.function(),
            f.name()
        );
    }
    let circuit = f.circuit(header.size())?;
    let started = Instant::now();
    let eval_keys = match &circuit {
        AnyCircuit::Tfhe(_) => EvalKeys::Tfhe(
            ServerKeys::load(keys)
                .with_context(|| format!("loading keys from {}", keys.display()))?
                .into(),
        ),
        AnyCircuit::Bfv(c) => EvalKeys::Bfv(tenebra_client::bfv::BfvKeys::load_key_set(keys, c)?),
    };
    let loaded = started.elapsed();
    let bar = ops_bar(0);
    let report = |p: Progress| {
        if let Some(b) = &bar {
            b.set_length(p.total as u64);
            b.set_position(p.done as u64);
        }
    };
    let opts = RunOptions {
        progress: Some(&report),
        ..RunOptions::default()
    };
    let result = tenebra_engine::scheme::run(&eval_keys, &circuit, &bytes, opts)?;
    if let Some(b) = bar {
        b.finish_and_clear();
    }
    eprintln!(
        "evaluated {} (size {}, {}) in {:.2} s (+ {:.2} s loading the key)",
        f.name(),
        header.size(),
        circuit.scheme(),
        (started.elapsed() - loaded).as_secs_f64(),
        loaded.as_secs_f64()
    );
    write_file(out, &result)
}
