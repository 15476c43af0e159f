//! The parallel dataflow executor: runs a plan's steps on ciphertexts with tfhe-rs.
//!
//! Steps start as soon as their inputs exist (not level by level), on rayon's pool; tfhe-rs's
//! own parallel operations share the same pool. Every value is freed right after its last
//! reader finished. The cancellation flag is checked before each step, and progress is
//! reported after each step.
//!
//! Memory is checked, not hoped for: the run counts the bytes of its live values and, before
//! each step, adds what the step will allocate (its results and temporaries, as
//! [`tenebra_circuit::footprint`] estimates them); a step that would take the total over the
//! cap (twice the plan's sequential footprint, so any schedule of a validated circuit fits)
//! fails the run with [`EngineError::TooLarge`] instead of allocating.
//!
//! Operations use the integer-level `tfhe::integer::ServerKey`, passed explicitly, so no
//! thread-local `set_server_key` is needed on the pool's threads.

use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use rayon::prelude::*;
use tenebra_circuit::footprint::{bytes, dot_shifts, footprint, temp_blocks, value_bytes};
use tenebra_circuit::ir::{BinOp, CmpOp, ConstOp, UnOp};
use tenebra_circuit::plan::{Arg, Plan, PlanOp, Step};
use tenebra_circuit::ScalarType;
use tfhe::integer::prelude::*;
use tfhe::integer::server_key::MatchValues;
use tfhe::integer::{
    BooleanBlock, IntegerCiphertext, RadixCiphertext, ServerKey, SignedRadixCiphertext,
};

use crate::EngineError;

/// One encrypted scalar.
#[derive(Clone)]
pub enum Ct {
    Bool(BooleanBlock),
    Uint(RadixCiphertext),
    Int(SignedRadixCiphertext),
}

impl Ct {
    /// The ciphertext as unsigned radix blocks (a `bool` is one block holding 0 or 1).
    pub fn into_radix(self) -> RadixCiphertext {
        match self {
            Ct::Bool(b) => RadixCiphertext::from(vec![b.into_raw_parts()]),
            Ct::Uint(r) => r,
            Ct::Int(s) => RadixCiphertext::from(s.into_blocks()),
        }
    }

    /// Reads radix blocks as a value of type `ty` (the inverse of [`Ct::into_radix`]).
    pub fn from_radix(r: RadixCiphertext, ty: ScalarType) -> Ct {
        match ty {
            ScalarType::Bool => {
                let block = r.into_blocks().into_iter().next();
                match block {
                    Some(b) => Ct::Bool(BooleanBlock::new_unchecked(b)),
                    None => unreachable!("callers check the block count"),
                }
            }
            ScalarType::Uint(_) => Ct::Uint(r),
            ScalarType::Int(_) => Ct::Int(SignedRadixCiphertext::from(r.into_blocks())),
        }
    }
}

/// Progress of a run: steps done out of the plan's total.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Progress {
    pub done: usize,
    pub total: usize,
}

/// How long one step took (for profiling).
#[derive(Debug, Clone, Copy)]
pub struct StepTiming {
    pub step: usize,
    pub elapsed: std::time::Duration,
}

/// Hooks a caller can give a run.
#[derive(Default, Clone, Copy)]
pub struct RunOptions<'a> {
    /// When set to `true`, the run stops before its next step.
    pub cancel: Option<&'a AtomicBool>,
    /// Called after each step (from pool threads).
    pub progress: Option<&'a (dyn Fn(Progress) + Sync)>,
    /// Collects each step's duration when set.
    pub timings: Option<&'a Mutex<Vec<StepTiming>>>,
    /// The most bytes the run may hold; by default twice the plan's footprint (plus a
    /// little), which any schedule of a validated circuit stays under.
    pub max_bytes: Option<u64>,
}

struct Run<'a> {
    sks: &'a ServerKey,
    plan: &'a Plan,
    values: Vec<Mutex<Option<Arc<Ct>>>>,
    remaining_uses: Vec<AtomicU32>,
    pending_deps: Vec<AtomicUsize>,
    consumers: Vec<Vec<usize>>,
    done: AtomicUsize,
    stop: AtomicBool,
    error: Mutex<Option<EngineError>>,
    opts: RunOptions<'a>,
    /// Bytes of the values alive now plus the steps running now.
    live_bytes: AtomicU64,
    max_bytes: u64,
}

/// Slack above twice the footprint, so tiny plans are not refused for rounding.
const CAP_SLACK: u64 = 64 << 20;

/// Runs a plan on expanded inputs (one per plan input, in signature order) and returns each
/// output's ciphertexts.
pub fn run(
    sks: &ServerKey,
    plan: &Plan,
    inputs: Vec<Ct>,
    opts: RunOptions<'_>,
) -> Result<Vec<Vec<Ct>>, EngineError> {
    if inputs.len() != plan.inputs.len() {
        return Err(EngineError::Internal(format!(
            "{} inputs for a plan of {}",
            inputs.len(),
            plan.inputs.len()
        )));
    }
    let uses = plan.use_counts();
    let mut producer: Vec<Option<usize>> = vec![None; plan.n_values];
    for (i, s) in plan.steps.iter().enumerate() {
        for &o in &s.outs {
            producer[o as usize] = Some(i);
        }
    }
    let mut consumers: Vec<Vec<usize>> = vec![Vec::new(); plan.steps.len()];
    let mut pending = vec![0usize; plan.steps.len()];
    for (i, s) in plan.steps.iter().enumerate() {
        for d in s.deps() {
            if let Some(p) = producer[d as usize] {
                consumers[p].push(i);
                pending[i] += 1;
            }
        }
    }
    let values: Vec<Mutex<Option<Arc<Ct>>>> =
        (0..plan.n_values).map(|_| Mutex::new(None)).collect();
    let mut input_bytes = 0u64;
    for (slot, ct) in plan.inputs.iter().zip(inputs) {
        if let Some(v) = slot {
            input_bytes += value_bytes(plan.value_types[*v as usize]);
            *lock(&values[*v as usize]) = Some(Arc::new(ct));
        }
    }
    let max_bytes = opts.max_bytes.unwrap_or_else(|| {
        footprint(plan)
            .working_set_bytes
            .saturating_mul(2)
            .saturating_add(CAP_SLACK)
    });
    let r = Run {
        sks,
        plan,
        values,
        remaining_uses: uses.into_iter().map(AtomicU32::new).collect(),
        pending_deps: pending.iter().map(|&p| AtomicUsize::new(p)).collect(),
        consumers,
        done: AtomicUsize::new(0),
        stop: AtomicBool::new(false),
        error: Mutex::new(None),
        opts,
        live_bytes: AtomicU64::new(input_bytes),
        max_bytes,
    };
    let ready: Vec<usize> = (0..plan.steps.len()).filter(|&i| pending[i] == 0).collect();
    rayon::scope(|s| {
        for i in ready {
            let r = &r;
            s.spawn(move |s| r.step(s, i));
        }
    });
    if let Some(e) = lock(&r.error).take() {
        return Err(e);
    }
    let done = r.done.load(Ordering::SeqCst);
    if done < plan.steps.len() {
        return Err(EngineError::Cancelled {
            done,
            total: plan.steps.len(),
        });
    }
    // Each output element is its own ciphertext in the result; the last reference to a value
    // moves it out instead of copying it.
    let mut refs = vec![0u32; plan.n_values];
    for &v in plan.outputs.iter().flatten() {
        refs[v as usize] += 1;
    }
    let mut take = |v: u32| -> Result<Ct, EngineError> {
        let slot = lock(&r.values[v as usize]).take();
        let ct = slot.ok_or_else(|| EngineError::Internal(format!("output value {v} missing")))?;
        refs[v as usize] -= 1;
        if refs[v as usize] == 0 {
            Ok(Arc::try_unwrap(ct).unwrap_or_else(|shared| Ct::clone(&shared)))
        } else {
            let copy = Ct::clone(&ct);
            *lock(&r.values[v as usize]) = Some(ct);
            Ok(copy)
        }
    };
    plan.outputs
        .iter()
        .map(|o| o.iter().map(|&v| take(v)).collect())
        .collect()
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // A panic inside a step is caught before it can poison anything we rely on.
    m.lock().unwrap_or_else(|p| p.into_inner())
}

impl<'a> Run<'a> {
    fn get(&self, v: u32) -> Result<Arc<Ct>, EngineError> {
        lock(&self.values[v as usize])
            .clone()
            .ok_or_else(|| EngineError::Internal(format!("value {v} read before it exists")))
    }

    fn fail(&self, e: EngineError) {
        self.stop.store(true, Ordering::SeqCst);
        let mut slot = lock(&self.error);
        if slot.is_none() {
            *slot = Some(e);
        }
    }

    fn step<'s>(&'s self, scope: &rayon::Scope<'s>, i: usize) {
        if self.stop.load(Ordering::SeqCst)
            || self.opts.cancel.is_some_and(|c| c.load(Ordering::SeqCst))
        {
            self.stop.store(true, Ordering::SeqCst);
            return;
        }
        let step = &self.plan.steps[i];
        let deps = step.deps();
        let outs_bytes = value_bytes(step.ty).saturating_mul(step.outs.len() as u64);
        let temp = bytes(temp_blocks(step));
        let need = outs_bytes.saturating_add(temp);
        let before = self.live_bytes.fetch_add(need, Ordering::SeqCst);
        if before.saturating_add(need) > self.max_bytes {
            self.live_bytes.fetch_sub(need, Ordering::SeqCst);
            return self.fail(EngineError::TooLarge(format!(
                "step {i} would take the run's memory to {} bytes, over its cap of {} bytes",
                before.saturating_add(need),
                self.max_bytes
            )));
        }
        let started = std::time::Instant::now();
        let args: Result<Vec<Arc<Ct>>, EngineError> = deps.iter().map(|&d| self.get(d)).collect();
        let result = args.and_then(|args| {
            catch_unwind(AssertUnwindSafe(|| {
                execute_step(self.sks, step, &deps, &args)
            }))
            .unwrap_or_else(|_| {
                Err(EngineError::Internal(format!(
                    "step {i} ({:?}) panicked",
                    std::mem::discriminant(&step.op)
                )))
            })
        });
        // The temporaries are gone; the results stay until their last reader.
        self.live_bytes.fetch_sub(temp, Ordering::SeqCst);
        let outs = match result {
            Ok(outs) => outs,
            Err(e) => return self.fail(e),
        };
        if let Some(t) = self.opts.timings {
            lock(t).push(StepTiming {
                step: i,
                elapsed: started.elapsed(),
            });
        }
        for (&o, ct) in step.outs.iter().zip(outs) {
            *lock(&self.values[o as usize]) = Some(Arc::new(ct));
        }
        // Free every input this step was the last reader of.
        for &d in &deps {
            if self.remaining_uses[d as usize].fetch_sub(1, Ordering::SeqCst) == 1
                && lock(&self.values[d as usize]).take().is_some()
            {
                self.live_bytes.fetch_sub(
                    value_bytes(self.plan.value_types[d as usize]),
                    Ordering::SeqCst,
                );
            }
        }
        let done = self.done.fetch_add(1, Ordering::SeqCst) + 1;
        if let Some(p) = self.opts.progress {
            p(Progress {
                done,
                total: self.plan.steps.len(),
            });
        }
        for &c in &self.consumers[i] {
            if self.pending_deps[c].fetch_sub(1, Ordering::SeqCst) == 1 {
                scope.spawn(move |s| self.step(s, c));
            }
        }
    }
}

/// Position of a step argument among its deps.
fn arg_ct<'c>(a: Arg, deps: &[u32], args: &'c [Arc<Ct>], skip: usize) -> Option<&'c Ct> {
    match a {
        Arg::Const(_) => None,
        Arg::Val(v) => deps
            .iter()
            .enumerate()
            .skip(skip)
            .find(|(_, &d)| d == v)
            .map(|(k, _)| &*args[k]),
    }
}

fn bad(what: &str) -> EngineError {
    EngineError::Internal(format!("plan step has ill-typed operands: {what}"))
}

fn trivial(sks: &ServerKey, c: u64, ty: ScalarType) -> Ct {
    match ty {
        ScalarType::Bool => Ct::Bool(sks.create_trivial_boolean_block(c & 1 == 1)),
        ScalarType::Uint(_) => Ct::Uint(sks.create_trivial_radix(c & ty.mask(), ty.blocks())),
        ScalarType::Int(_) => Ct::Int(sks.create_trivial_radix(c & ty.mask(), ty.blocks())),
    }
}

/// Sign-extended constant for signed scalar operations.
fn signed(ty: ScalarType, c: u64) -> i64 {
    ty.to_i128(c) as i64
}

fn execute_step(
    sks: &ServerKey,
    step: &Step,
    deps: &[u32],
    args: &[Arc<Ct>],
) -> Result<Vec<Ct>, EngineError> {
    let ty = step.ty;
    let one = |ct: Ct| Ok(vec![ct]);
    match &step.op {
        PlanOp::Unary { op, .. } => match (&*args[0], op) {
            (Ct::Bool(b), UnOp::Not) => one(Ct::Bool(sks.boolean_bitnot(b))),
            (Ct::Uint(a), UnOp::Not) => one(Ct::Uint(sks.bitnot(a))),
            (Ct::Int(a), UnOp::Not) => one(Ct::Int(sks.bitnot(a))),
            (Ct::Uint(a), UnOp::Neg) => one(Ct::Uint(sks.neg_parallelized(a))),
            (Ct::Int(a), UnOp::Neg) => one(Ct::Int(sks.neg_parallelized(a))),
            _ => Err(bad("neg of bool")),
        },
        PlanOp::Binary { op, a, b } => {
            let first = arg_ct(*a, deps, args, 0);
            let second = arg_ct(*b, deps, args, usize::from(first.is_some()));
            match (first, second) {
                (Some(x), Some(y)) => binary(sks, *op, x, y).map(|c| vec![c]),
                (Some(x), None) => {
                    let Arg::Const(c) = b else {
                        return Err(bad("binary"));
                    };
                    binary_const(sks, *op, x, *c, ty, false).map(|c| vec![c])
                }
                (None, Some(y)) => {
                    let Arg::Const(c) = a else {
                        return Err(bad("binary"));
                    };
                    binary_const(sks, *op, y, *c, ty, true).map(|c| vec![c])
                }
                (None, None) => Err(bad("binary of two constants")),
            }
        }
        PlanOp::Compare { op, a, b, ty: oty } => {
            let first = arg_ct(*a, deps, args, 0);
            let second = arg_ct(*b, deps, args, usize::from(first.is_some()));
            let r = match (first, second, a, b) {
                (Some(x), Some(y), _, _) => compare(sks, *op, x, y)?,
                (Some(x), None, _, Arg::Const(c)) => compare_const(sks, *op, x, *c, *oty)?,
                (None, Some(y), Arg::Const(c), _) => compare_const(sks, op.swapped(), y, *c, *oty)?,
                _ => return Err(bad("compare")),
            };
            one(Ct::Bool(r))
        }
        PlanOp::ByConst { op, c, .. } => {
            let c = *c;
            match (&*args[0], op) {
                (Ct::Uint(a), ConstOp::Div) => one(Ct::Uint(sks.scalar_div_parallelized(a, c))),
                (Ct::Uint(a), ConstOp::Rem) => one(Ct::Uint(sks.scalar_rem_parallelized(a, c))),
                (Ct::Int(a), ConstOp::Div) => one(Ct::Int(
                    sks.signed_scalar_div_parallelized(a, signed(ty, c)),
                )),
                (Ct::Int(a), ConstOp::Rem) => one(Ct::Int(
                    sks.signed_scalar_rem_parallelized(a, signed(ty, c)),
                )),
                (Ct::Uint(a), ConstOp::Shl) => {
                    one(Ct::Uint(sks.scalar_left_shift_parallelized(a, c as u32)))
                }
                (Ct::Int(a), ConstOp::Shl) => {
                    one(Ct::Int(sks.scalar_left_shift_parallelized(a, c as u32)))
                }
                (Ct::Uint(a), ConstOp::Shr) => {
                    one(Ct::Uint(sks.scalar_right_shift_parallelized(a, c as u32)))
                }
                (Ct::Int(a), ConstOp::Shr) => {
                    one(Ct::Int(sks.scalar_right_shift_parallelized(a, c as u32)))
                }
                _ => Err(bad("constant op on bool")),
            }
        }
        PlanOp::Select { a, b, .. } => {
            let Ct::Bool(cond) = &*args[0] else {
                return Err(bad("select condition"));
            };
            let first = arg_ct(*a, deps, args, 1);
            let skip = 1 + usize::from(first.is_some());
            let second = arg_ct(*b, deps, args, skip);
            let radix = |c: &Ct| c.clone().into_radix();
            // A constant branch uses tfhe-rs's scalar form: one PBS per block, not a full cmux.
            let r: RadixCiphertext = match (first, second, a, b) {
                (Some(x), Some(y), _, _) => {
                    sks.if_then_else_parallelized(cond, &radix(x), &radix(y))
                }
                (Some(x), None, _, Arg::Const(c)) => {
                    sks.if_then_else_parallelized(cond, &radix(x), *c & ty.mask())
                }
                (None, Some(y), Arg::Const(c), _) => {
                    sks.if_then_else_parallelized(cond, *c & ty.mask(), &radix(y))
                }
                (None, None, Arg::Const(x), Arg::Const(y)) => sks.scalar_if_then_else_parallelized(
                    cond,
                    *x & ty.mask(),
                    *y & ty.mask(),
                    ty.blocks(),
                ),
                _ => return Err(bad("select")),
            };
            one(Ct::from_radix(r, ty))
        }
        PlanOp::Cast { .. } => one(cast(sks, &args[0], ty)),
        PlanOp::Sum { constant, .. } => {
            // Signed and unsigned sums are the same on two's complement blocks.
            let mut xs = Vec::with_capacity(args.len() + 1);
            for a in args {
                match &**a {
                    Ct::Bool(_) => return Err(bad("sum of bools")),
                    other => xs.push(other.clone().into_radix()),
                }
            }
            if *constant & ty.mask() != 0 {
                xs.push(sks.create_trivial_radix(*constant & ty.mask(), ty.blocks()));
            }
            let s: RadixCiphertext = sks
                .sum_ciphertexts_parallelized(&xs)
                .ok_or_else(|| bad("empty sum"))?;
            one(Ct::from_radix(s, ty))
        }
        PlanOp::MinMax { .. } => {
            let (x, y) = (&*args[0], &*args[1]);
            // One comparison, two selects side by side.
            // One comparison, then swap the pair when it is out of order.
            let gt = compare(sks, CmpOp::Gt, x, y)?;
            let (xr, yr) = (x.clone().into_radix(), y.clone().into_radix());
            let (mn, mx) = sks.flip_parallelized(&gt, &xr, &yr);
            Ok(vec![Ct::from_radix(mn, ty), Ct::from_radix(mx, ty)])
        }
        PlanOp::Dot { weights, .. } => {
            let xs: Vec<RadixCiphertext> = args
                .iter()
                .map(|a| a.as_ref().clone().into_radix())
                .collect();
            one(Ct::from_radix(dot(sks, &xs, weights, ty)?, ty))
        }
        PlanOp::Lut { table, .. } => {
            let index = args[0].as_ref().clone().into_radix();
            one(Ct::from_radix(lookup(sks, &index, table, ty)?, ty))
        }
        PlanOp::Constant { c } => one(trivial(sks, *c, ty)),
    }
}

/// `x` shifted left by `2 * blocks` bits: free (blocks move, trivial zeros come in).
fn block_shift(sks: &ServerKey, x: &RadixCiphertext, blocks: usize) -> RadixCiphertext {
    let n = x.blocks().len();
    let blocks = blocks.min(n);
    let zeros: RadixCiphertext = sks.create_trivial_zero_radix(blocks);
    let mut out: Vec<_> = zeros.into_blocks();
    out.extend(x.blocks()[..n - blocks].iter().cloned());
    RadixCiphertext::from(out)
}

/// Wrapping `sum(w_i * x_i)` with one carry propagation for the whole product.
///
/// A weight with few set bits (or whose negation has few) becomes shifted copies of `x`:
/// shifts by an even number of bits move whole 2-bit blocks for free, an odd shift is the
/// even one counted twice, and a negative weight adds `!(x << k) + 1`, with `!` free too.
/// Every copy goes into a single multi-operand sum. Other weights fall back to a scalar
/// multiplication, whose result joins the same sum.
fn dot(
    sks: &ServerKey,
    xs: &[RadixCiphertext],
    weights: &[u64],
    ty: ScalarType,
) -> Result<RadixCiphertext, EngineError> {
    let mask = ty.mask();
    let per_term: Vec<(Vec<RadixCiphertext>, u64)> = xs
        .par_iter()
        .zip(weights.par_iter())
        .map(|(x, &w)| {
            let w = w & mask;
            let Some((mag, negative)) = dot_shifts(w, ty) else {
                return (vec![sks.scalar_mul_parallelized(x, w)], 0);
            };
            let mut terms = Vec::new();
            let mut constant = 0u64;
            for k in (0..u32::from(ty.bits())).filter(|k| mag >> k & 1 == 1) {
                let shifted = block_shift(sks, x, (k / 2) as usize);
                for _ in 0..1 + (k % 2) {
                    if negative {
                        terms.push(sks.bitnot(&shifted));
                        constant = constant.wrapping_add(1);
                    } else {
                        terms.push(shifted.clone());
                    }
                }
            }
            (terms, constant)
        })
        .collect();
    let mut terms = Vec::new();
    let mut constant = 0u64;
    for (t, c) in per_term {
        terms.extend(t);
        constant = constant.wrapping_add(c);
    }
    let constant = constant & mask;
    if constant != 0 {
        // A trivial operand costs the sum almost nothing; a scalar add after it would cost
        // a whole carry propagation.
        terms.push(sks.create_trivial_radix(constant, ty.blocks()));
    }
    Ok(match terms.len() {
        0 => sks.create_trivial_radix(0u64, ty.blocks()),
        1 => terms.pop().unwrap_or_else(|| unreachable!()),
        _ => sks
            .sum_ciphertexts_parallelized(&terms)
            .ok_or_else(|| bad("empty dot"))?,
    })
}

/// `table[index]` as radix blocks of `ty`. Inputs of one or two blocks take one PBS per
/// output block (a bivariate PBS reads both input blocks at once); wider inputs use
/// tfhe-rs's `match_value`.
fn lookup(
    sks: &ServerKey,
    index: &RadixCiphertext,
    table: &[u64],
    ty: ScalarType,
) -> Result<RadixCiphertext, EngineError> {
    let short: &tfhe::shortint::ServerKey = sks.as_ref();
    let entry = |i: u64, k: usize| (table.get(i as usize).copied().unwrap_or(0) >> (2 * k)) & 3;
    let blocks = index.blocks();
    match blocks {
        [only] => {
            let out: Vec<_> = (0..ty.blocks())
                .into_par_iter()
                .map(|k| {
                    let lut = short.generate_lookup_table(|x| entry(x, k));
                    short.apply_lookup_table(only, &lut)
                })
                .collect();
            Ok(RadixCiphertext::from(out))
        }
        [lo, hi] => {
            let out: Vec<_> = (0..ty.blocks())
                .into_par_iter()
                .map(|k| {
                    let lut = short.generate_lookup_table_bivariate(|h, l| entry(h * 4 + l, k));
                    short.apply_lookup_table_bivariate(hi, lo, &lut)
                })
                .collect();
            Ok(RadixCiphertext::from(out))
        }
        _ => {
            let pairs: Vec<(u64, u64)> = table
                .iter()
                .enumerate()
                .map(|(i, &v)| (i as u64, v))
                .collect();
            let matches = MatchValues::new(pairs)
                .map_err(|e| EngineError::Internal(format!("lookup table: {e}")))?;
            let (r, _) = sks.match_value_parallelized(index, &matches);
            Ok(sks.cast_to_unsigned(r, ty.blocks()))
        }
    }
}

fn binary(sks: &ServerKey, op: BinOp, x: &Ct, y: &Ct) -> Result<Ct, EngineError> {
    macro_rules! radix {
        ($a:expr, $b:expr) => {
            match op {
                BinOp::Add => sks.add_parallelized($a, $b),
                BinOp::Sub => sks.sub_parallelized($a, $b),
                BinOp::Mul => sks.mul_parallelized($a, $b),
                BinOp::And => sks.bitand_parallelized($a, $b),
                BinOp::Or => sks.bitor_parallelized($a, $b),
                BinOp::Xor => sks.bitxor_parallelized($a, $b),
                BinOp::Min => sks.min_parallelized($a, $b),
                BinOp::Max => sks.max_parallelized($a, $b),
            }
        };
    }
    Ok(match (x, y) {
        (Ct::Uint(a), Ct::Uint(b)) => Ct::Uint(radix!(a, b)),
        (Ct::Int(a), Ct::Int(b)) => Ct::Int(radix!(a, b)),
        (Ct::Bool(a), Ct::Bool(b)) => Ct::Bool(match op {
            BinOp::And => sks.boolean_bitand(a, b),
            BinOp::Or => sks.boolean_bitor(a, b),
            BinOp::Xor => sks.boolean_bitxor(a, b),
            _ => return Err(bad("arithmetic on bools")),
        }),
        _ => return Err(bad("mixed operand types")),
    })
}

/// `x op c`, or `c op x` when `const_left`.
fn binary_const(
    sks: &ServerKey,
    op: BinOp,
    x: &Ct,
    c: u64,
    ty: ScalarType,
    const_left: bool,
) -> Result<Ct, EngineError> {
    macro_rules! radix {
        ($a:expr, $sc:expr) => {
            match op {
                BinOp::Add => sks.scalar_add_parallelized($a, c),
                BinOp::Sub if const_left => sks.left_scalar_sub_parallelized(c, $a),
                BinOp::Sub => sks.scalar_sub_parallelized($a, c),
                BinOp::Mul => sks.scalar_mul_parallelized($a, c),
                BinOp::And => sks.scalar_bitand_parallelized($a, c),
                BinOp::Or => sks.scalar_bitor_parallelized($a, c),
                BinOp::Xor => sks.scalar_bitxor_parallelized($a, c),
                BinOp::Min => sks.scalar_min_parallelized($a, $sc),
                BinOp::Max => sks.scalar_max_parallelized($a, $sc),
            }
        };
    }
    Ok(match x {
        Ct::Uint(a) => Ct::Uint(radix!(a, c)),
        Ct::Int(a) => Ct::Int(radix!(a, signed(ty, c))),
        Ct::Bool(a) => {
            let k = c & 1 == 1;
            Ct::Bool(match (op, k) {
                (BinOp::And, true) | (BinOp::Or, false) | (BinOp::Xor, false) => a.clone(),
                (BinOp::And, false) => sks.create_trivial_boolean_block(false),
                (BinOp::Or, true) => sks.create_trivial_boolean_block(true),
                (BinOp::Xor, true) => sks.boolean_bitnot(a),
                _ => return Err(bad("arithmetic on bools")),
            })
        }
    })
}

fn compare(sks: &ServerKey, op: CmpOp, x: &Ct, y: &Ct) -> Result<BooleanBlock, EngineError> {
    macro_rules! radix {
        ($a:expr, $b:expr) => {
            match op {
                CmpOp::Eq => sks.eq_parallelized($a, $b),
                CmpOp::Ne => sks.ne_parallelized($a, $b),
                CmpOp::Lt => sks.lt_parallelized($a, $b),
                CmpOp::Le => sks.le_parallelized($a, $b),
                CmpOp::Gt => sks.gt_parallelized($a, $b),
                CmpOp::Ge => sks.ge_parallelized($a, $b),
            }
        };
    }
    match (x, y) {
        (Ct::Uint(a), Ct::Uint(b)) => Ok(radix!(a, b)),
        (Ct::Int(a), Ct::Int(b)) => Ok(radix!(a, b)),
        _ => Err(bad("comparison operands")),
    }
}

fn compare_const(
    sks: &ServerKey,
    op: CmpOp,
    x: &Ct,
    c: u64,
    ty: ScalarType,
) -> Result<BooleanBlock, EngineError> {
    macro_rules! radix {
        ($a:expr, $c:expr) => {
            match op {
                CmpOp::Eq => sks.scalar_eq_parallelized($a, $c),
                CmpOp::Ne => sks.scalar_ne_parallelized($a, $c),
                CmpOp::Lt => sks.scalar_lt_parallelized($a, $c),
                CmpOp::Le => sks.scalar_le_parallelized($a, $c),
                CmpOp::Gt => sks.scalar_gt_parallelized($a, $c),
                CmpOp::Ge => sks.scalar_ge_parallelized($a, $c),
            }
        };
    }
    match x {
        Ct::Uint(a) => Ok(radix!(a, c)),
        Ct::Int(a) => Ok(radix!(a, signed(ty, c))),
        Ct::Bool(_) => Err(bad("comparison of bools")),
    }
}

fn cast(sks: &ServerKey, x: &Ct, to: ScalarType) -> Ct {
    match (x, to) {
        (Ct::Bool(b), ScalarType::Bool) => Ct::Bool(b.clone()),
        (Ct::Uint(a), ScalarType::Bool) => Ct::Bool(sks.scalar_ne_parallelized(a, 0u64)),
        (Ct::Int(a), ScalarType::Bool) => Ct::Bool(sks.scalar_ne_parallelized(a, 0i64)),
        (Ct::Bool(b), _) => {
            let r: RadixCiphertext = b.clone().into_radix(to.blocks(), sks);
            Ct::from_radix(r, to)
        }
        (Ct::Uint(a), ScalarType::Uint(_)) => {
            Ct::Uint(sks.cast_to_unsigned(a.clone(), to.blocks()))
        }
        (Ct::Uint(a), ScalarType::Int(_)) => Ct::Int(sks.cast_to_signed(a.clone(), to.blocks())),
        (Ct::Int(a), ScalarType::Uint(_)) => Ct::Uint(sks.cast_to_unsigned(a.clone(), to.blocks())),
        (Ct::Int(a), ScalarType::Int(_)) => Ct::Int(sks.cast_to_signed(a.clone(), to.blocks())),
    }
}
