//! Running a BFV plan on ciphertexts: plain operands encoded once per circuit and
//! parameters (cached by bytes), diagonal matrix products, sums, and the run itself.

use super::*;
use crate::cache::{ByBytes, BytesCache};

/// Plaintexts of a circuit's plain operands, encoded once per (circuit, parameters) and kept
/// for the next runs (the ad catalogue's 128 diagonals take longer to encode than to apply),
/// up to [`ENCODED_CACHE_BYTES`] over all circuits (a wide circuit's diagonals can take
/// gigabytes: one larger than a cache shard is encoded for each run instead).
pub(super) type Encoded = Arc<Vec<Vec<Option<Plaintext>>>>;

/// Bytes of encoded plaintexts kept over all circuits.
pub const ENCODED_CACHE_BYTES: u64 = 1 << 30;

pub(super) fn encoded(
    circuit: &ValidBfv,
    par: &Arc<BfvParameters>,
) -> Result<Encoded, EngineError> {
    // Keyed by the parameters' address: entries hold their `Arc`, so it is never reused.
    type Key = (String, usize);
    static CACHE: OnceLock<BytesCache<Key, Encoded>> = OnceLock::new();
    let cache = CACHE.get_or_init(|| BytesCache::with_weighter(64, ENCODED_CACHE_BYTES, ByBytes));
    let key = (circuit.id().to_string(), Arc::as_ptr(par) as usize);
    if let Some((_, e)) = cache.get(&key) {
        return Ok(e);
    }
    let plan = circuit.plan();
    let nodes = circuit.circuit().nodes.iter().enumerate();
    let per_node: Vec<Vec<Option<Plaintext>>> = nodes
        .map(|(id, n)| encode_node(n, plan, id, par))
        .collect::<Result<_, _>>()?;
    let plaintexts = per_node.iter().flatten().filter(|p| p.is_some()).count() as u64;
    // A plaintext holds its coefficients and its NTT form over every modulus.
    let each = (par.degree() * (par.moduli().len() + 1) * 8) as u64;
    let e = Arc::new(per_node);
    cache.insert(key, (plaintexts.saturating_mul(each), e.clone()));
    Ok(e)
}

pub(super) fn encode_slots(
    slots: &[i64],
    par: &Arc<BfvParameters>,
) -> Result<Option<Plaintext>, EngineError> {
    if slots.iter().all(|v| *v == 0) {
        return Ok(None);
    }
    Plaintext::try_encode(slots, Encoding::simd(), par)
        .map(Some)
        .map_err(internal)
}

pub(super) fn arg_layout_cts(plan: &BfvPlan, n: &PNode) -> usize {
    n.deps()
        .first()
        .map_or(1, |a| plan.nodes[*a as usize].layout.ciphertexts())
}

pub(super) fn encode_always(
    slots: &[i64],
    par: &Arc<BfvParameters>,
) -> Result<Option<Plaintext>, EngineError> {
    Plaintext::try_encode(slots, Encoding::simd(), par)
        .map(Some)
        .map_err(internal)
}

/// The plaintexts node `id` multiplies or adds, in the order the executor uses them.
pub(super) fn encode_node(
    n: &PNode,
    plan: &BfvPlan,
    id: usize,
    par: &Arc<BfvParameters>,
) -> Result<Vec<Option<Plaintext>>, EngineError> {
    let degree = plan.degree;
    let info = &plan.nodes[id];
    let arg_layout = |a: u32| plan.nodes[a as usize].layout;
    match n {
        PNode::Matvec { a, matrix } => {
            let mv = info
                .matvec
                .as_ref()
                .ok_or_else(|| internal("matvec without plan"))?;
            let x_len = plan.nodes[*a as usize].len;
            let chunks = info.layout.ciphertexts();
            let mut out = Vec::with_capacity(chunks * mv.giant * mv.baby);
            for c in 0..chunks {
                for g in 0..mv.giant {
                    let slots: Vec<Vec<i64>> = (0..mv.baby)
                        .into_par_iter()
                        .map(|b| {
                            diagonal(
                                matrix,
                                x_len,
                                info.layout,
                                mv,
                                c,
                                g * mv.baby + b,
                                g * mv.baby,
                                degree,
                            )
                        })
                        .collect();
                    for s in slots {
                        out.push(encode_slots(&s, par)?);
                    }
                }
                // An all-zero matrix still multiplies (to zero): keep one plaintext.
                let first = c * mv.giant * mv.baby;
                if out[first..].iter().all(Option::is_none) {
                    out[first] = encode_always(&vec![0; degree], par)?;
                }
            }
            Ok(out)
        }
        PNode::Dot { a, weights } => arg_layout(*a)
            .place(weights, degree)
            .iter()
            .map(|s| encode_always(s, par))
            .collect(),
        // A constant factor multiplies every slot (padding stays 0): the constant polynomial
        // |c|, which grows the noise by |c| only (the executor negates for c < 0; -c as a
        // residue would be t - |c|).
        PNode::MulPlain { plain, .. } if plain.len() == 1 => {
            let c = plain[0].unsigned_abs() as i64;
            Ok(vec![
                encode_always(&vec![c; degree], par)?;
                arg_layout_cts(plan, n)
            ])
        }
        PNode::AddPlain { a, plain } | PNode::MulPlain { a, plain } => {
            let len = plan.nodes[*a as usize].len;
            let full: Vec<i64> = if plain.len() == 1 {
                vec![plain[0]; len]
            } else {
                plain.clone()
            };
            arg_layout(*a)
                .place(&full, degree)
                .iter()
                .map(|s| encode_always(s, par))
                .collect()
        }
        _ => Ok(vec![]),
    }
}

/// Slot values of generalized diagonal `k` for output ciphertext `chunk`, pre-rotated right by
/// `pre` (the giant step it is summed under).
#[allow(clippy::too_many_arguments)]
pub(super) fn diagonal(
    matrix: &[Vec<i64>],
    n: usize,
    layout: Layout,
    mv: &MatvecPlan,
    chunk: usize,
    k: usize,
    pre: usize,
    degree: usize,
) -> Vec<i64> {
    let half = degree / 2;
    if k >= mv.diagonals {
        return vec![0; degree];
    }
    (0..degree)
        .map(|u| {
            // The slot whose value lands in `u` after rotating left by `pre`.
            let (row, col) = (u / half, u % half);
            let s = row * half + (col + half - pre % half) % half;
            let i = match layout {
                Layout::Replicated { period } => s % period,
                Layout::Chunked { .. } => chunk * degree + s,
            };
            let j = (s % half + k) % mv.period_in;
            if i < matrix.len() && j < n {
                matrix[i][j]
            } else {
                0
            }
        })
        .collect()
}

pub(super) fn add_all(mut terms: impl Iterator<Item = Ciphertext>) -> Option<Ciphertext> {
    let mut acc = terms.next()?;
    for t in terms {
        acc += &t;
    }
    Some(acc)
}

pub(super) fn matvec(
    ev: &Evaluator,
    x: &Ciphertext,
    mv: &MatvecPlan,
    chunks: usize,
    pts: &[Option<Plaintext>],
) -> Result<Vec<Ciphertext>, EngineError> {
    // Baby steps: the input rotated by 0..baby, shared by every output ciphertext.
    let baby: Vec<Ciphertext> = (0..mv.baby)
        .into_par_iter()
        .map(|b| {
            if b == 0 {
                Ok(x.clone())
            } else {
                ev.rotate(x, b)
            }
        })
        .collect::<Result<_, _>>()?;
    (0..chunks)
        .into_par_iter()
        .map(|c| {
            let groups: Vec<Ciphertext> = (0..mv.giant)
                .into_par_iter()
                .map(|g| {
                    let base = (c * mv.giant + g) * mv.baby;
                    let inner = add_all(
                        (0..mv.baby).filter_map(|b| pts[base + b].as_ref().map(|p| &baby[b] * p)),
                    );
                    match inner {
                        Some(ct) if g > 0 => ev.rotate(&ct, g * mv.baby).map(Some),
                        other => Ok(other),
                    }
                })
                .collect::<Result<Vec<_>, _>>()?
                .into_iter()
                .flatten()
                .collect();
            let mut acc =
                add_all(groups.into_iter()).ok_or_else(|| internal("matvec without terms"))?;
            for step in &mv.fold {
                let r = ev.rotate(&acc, *step)?;
                acc += &r;
            }
            Ok(acc)
        })
        .collect()
}

pub(super) fn sum(
    ev: &Evaluator,
    cts: Vec<Ciphertext>,
    layout: Layout,
    degree: usize,
) -> Result<Ciphertext, EngineError> {
    let span = match layout {
        Layout::Replicated { period } => period,
        Layout::Chunked { .. } => degree / 2,
    };
    let mut acc = add_all(cts.into_iter()).ok_or_else(|| internal("empty vector"))?;
    let mut step = 1;
    while step < span {
        let r = ev.rotate(&acc, step)?;
        acc += &r;
        step *= 2;
    }
    if matches!(layout, Layout::Chunked { .. }) {
        let r = ev.ek.rotates_rows(&acc).map_err(internal)?;
        acc += &r;
    }
    Ok(acc)
}

/// Runs a BFV circuit on an input bundle with a key set; returns the result bundle.
pub fn run(keys: &BfvKeySet, circuit: &ValidBfv, input: &[u8]) -> Result<Vec<u8>, EngineError> {
    run_with(keys, circuit, input, crate::RunOptions::default())
}

/// [`run`] with the executor's hooks: the cancellation flag is checked before every node
/// (a cancel, a lost lease or a shutdown stops the run there) and progress is reported after
/// each.
pub fn run_with(
    keys: &BfvKeySet,
    circuit: &ValidBfv,
    input: &[u8],
    opts: crate::RunOptions<'_>,
) -> Result<Vec<u8>, EngineError> {
    let plan = circuit.plan();
    let (header, payload) = read_bundle(input, Kind::Input, &circuit.signature())?;
    if header.key_set_id != keys.id() {
        return Err(EngineError::BadInput(format!(
            "the input is encrypted under key set {}, not key set {}",
            header.key_set_id,
            keys.id()
        )));
    }
    if let Some(m) = keys.header.needs.missing(&KeyNeeds::of(plan)) {
        return Err(EngineError::BadInput(format!(
            "{m}: encrypt for `{}` again, which remakes the key directory's BFV key set with the \
             keys it needs, and upload that key set",
            header.function
        )));
    }
    let ev = keys.evaluator(plan.plain_modulus)?;
    let expected: Vec<u32> = (0..circuit.circuit().inputs.len())
        .map(|i| input_layout(circuit, i).map(|l| l.ciphertexts() as u32))
        .collect::<Result<_, _>>()?;
    if header.counts != expected {
        return Err(EngineError::BadInput(format!(
            "the input holds {:?} ciphertexts per input, the function takes {expected:?}",
            header.counts
        )));
    }
    let cts = unframe(payload, &ev.par, expected.iter().map(|c| *c as usize).sum())?;
    let outputs = guarded("the input", || execute(&ev, circuit, cts, opts))?;
    let mut flat = Vec::new();
    let mut counts = Vec::new();
    for o in &circuit.circuit().outputs {
        let v = &outputs[o.node as usize];
        counts.push(v.len() as u32);
        flat.extend(v.iter().map(|c| c.to_bytes()));
    }
    let out_header = BfvHeader { counts, ..header };
    bundle::write(Kind::Result, &out_header, &frame(&flat))
}

pub(super) fn execute(
    ev: &Evaluator,
    circuit: &ValidBfv,
    inputs: Vec<Ciphertext>,
    opts: crate::RunOptions<'_>,
) -> Result<Vec<Vec<Ciphertext>>, EngineError> {
    let plan = circuit.plan();
    let pts = encoded(circuit, &ev.par)?;
    let mut per_input = Vec::new();
    let mut it = inputs.into_iter();
    for i in 0..circuit.circuit().inputs.len() {
        let n = input_layout(circuit, i)?.ciphertexts();
        per_input.push(it.by_ref().take(n).collect::<Vec<_>>());
    }
    let mut vals: Vec<Vec<Ciphertext>> = Vec::with_capacity(plan.nodes.len());
    let total = circuit.circuit().nodes.len();
    for (id, n) in circuit.circuit().nodes.iter().enumerate() {
        if opts
            .cancel
            .is_some_and(|c| c.load(std::sync::atomic::Ordering::SeqCst))
        {
            return Err(EngineError::Cancelled { done: id, total });
        }
        let p = &pts[id];
        let layout = plan.nodes[id].layout;
        let v = match n {
            PNode::Input { input } => per_input[*input as usize].clone(),
            PNode::Matvec { a, .. } => {
                let mv = plan.nodes[id]
                    .matvec
                    .as_ref()
                    .ok_or_else(|| internal("no plan"))?;
                matvec(ev, &vals[*a as usize][0], mv, layout.ciphertexts(), p)?
            }
            PNode::Dot { a, .. } => {
                let x = &vals[*a as usize];
                let prods: Vec<Ciphertext> = x
                    .iter()
                    .zip(p)
                    .filter_map(|(c, pt)| pt.as_ref().map(|pt| c * pt))
                    .collect();
                vec![sum(ev, prods, plan.nodes[*a as usize].layout, plan.degree)?]
            }
            PNode::Add { a, b } => zip_ct(&vals[*a as usize], &vals[*b as usize], |x, y| x + y),
            PNode::Sub { a, b } => zip_ct(&vals[*a as usize], &vals[*b as usize], |x, y| x - y),
            PNode::AddPlain { a, .. } => vals[*a as usize]
                .iter()
                .zip(p)
                .map(|(c, pt)| pt.as_ref().map_or_else(|| c.clone(), |pt| c + pt))
                .collect(),
            PNode::MulPlain { a, plain } => {
                let negate = plain.len() == 1 && plain[0] < 0;
                vals[*a as usize]
                    .iter()
                    .zip(p)
                    .map(|(c, pt)| {
                        let prod = pt.as_ref().map_or_else(|| c.clone(), |pt| c * pt);
                        if negate {
                            -prod
                        } else {
                            prod
                        }
                    })
                    .collect()
            }
            PNode::Square { a } => {
                let rk = ev.rk.as_ref().ok_or_else(|| {
                    EngineError::BadInput("the key set has no relinearization key".into())
                })?;
                let m = Multiplicator::default(rk).map_err(internal)?;
                vals[*a as usize]
                    .par_iter()
                    .map(|c| m.multiply(c, c).map_err(internal))
                    .collect::<Result<_, _>>()?
            }
            PNode::Sum { a } => {
                let x = vals[*a as usize].clone();
                vec![sum(ev, x, plan.nodes[*a as usize].layout, plan.degree)?]
            }
        };
        vals.push(v);
        if let Some(report) = opts.progress {
            report(crate::Progress {
                done: id + 1,
                total,
            });
        }
    }
    Ok(vals)
}

pub(super) fn zip_ct(
    a: &[Ciphertext],
    b: &[Ciphertext],
    f: impl Fn(&Ciphertext, &Ciphertext) -> Ciphertext,
) -> Vec<Ciphertext> {
    a.iter().zip(b).map(|(x, y)| f(x, y)).collect()
}
