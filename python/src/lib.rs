//! `tenebra._native`: the Python SDK's Rust half (pyo3). Keys, encryption and decryption,
//! the circuit builder's tracer values, and a blocking HTTP client; the `tenebra` Python
//! package wraps these with the tracing decorator and typed helpers.
//!
//! Everything long (key generation, encryption, decryption, network calls) runs with the
//! GIL released.

use std::path::PathBuf;
use std::sync::Arc;

use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use serde_json::Value;
use tenebra_circuit::builder::{self, Plain};
use tenebra_circuit::{ScalarType, ValidCircuit};
use tenebra_client::http::{self, HttpError};
use tenebra_client::run::RunError;
use tenebra_client::ClientKeys;

pyo3::create_exception!(_native, ApiError, pyo3::exceptions::PyException);

fn value_error(e: impl std::fmt::Display) -> PyErr {
    PyValueError::new_err(e.to_string())
}

fn to_json(obj: &Bound<'_, PyAny>) -> PyResult<Value> {
    pythonize::depythonize(obj).map_err(value_error)
}

fn to_py<'py>(py: Python<'py>, v: &impl serde::Serialize) -> PyResult<Bound<'py, PyAny>> {
    pythonize::pythonize(py, v).map_err(|e| PyRuntimeError::new_err(e.to_string()))
}

/// A scalar type: `u8`, `u16`, ..., `i8`, ..., `bool`.
fn parse_type(name: &str) -> PyResult<ScalarType> {
    let bad = || value_error(format!("unknown type `{name}` (u8..u64, i8..i64 or bool)"));
    if name == "bool" {
        return Ok(ScalarType::Bool);
    }
    let (signed, bits) = match name.split_at_checked(1) {
        Some(("u", b)) => (false, b),
        Some(("i", b)) => (true, b),
        _ => return Err(bad()),
    };
    let bits: u8 = bits.parse().map_err(|_| bad())?;
    let ty = if signed {
        ScalarType::int(bits)
    } else {
        ScalarType::uint(bits)
    };
    ty.map_err(value_error)
}

fn type_name(t: ScalarType) -> String {
    t.to_string()
}

/// A circuit being traced: inputs are declared here, outputs set, then `build()`.
#[pyclass(unsendable, module = "tenebra._native")]
struct Builder(Option<builder::Builder>);

/// An encrypted value being traced: operations on it record the circuit.
#[pyclass(unsendable, from_py_object, module = "tenebra._native")]
#[derive(Clone)]
struct Tracer(builder::Var);

impl Builder {
    fn get(&self) -> PyResult<&builder::Builder> {
        self.0
            .as_ref()
            .ok_or_else(|| PyRuntimeError::new_err("this builder was already built"))
    }
}

#[pymethods]
impl Builder {
    #[new]
    fn new(name: &str) -> Self {
        Builder(Some(builder::Builder::new(name)))
    }

    /// Declares a scalar encrypted input of type `ty` (`"u16"`, ...).
    fn input(&self, name: &str, ty: &str) -> PyResult<Tracer> {
        Ok(Tracer(self.get()?.input(name, parse_type(ty)?)))
    }

    /// Declares an encrypted input vector of `len` elements.
    fn input_vec(&self, name: &str, ty: &str, len: u32) -> PyResult<Vec<Tracer>> {
        let vs = self.get()?.input_vec(name, parse_type(ty)?, len);
        Ok(vs.into_iter().map(Tracer).collect())
    }

    /// Declares a scalar output.
    fn output(&self, name: &str, v: &Tracer) -> PyResult<()> {
        self.get()?.output(name, &v.0);
        Ok(())
    }

    /// Declares a vector output.
    fn output_vec(&self, name: &str, vs: Vec<Tracer>) -> PyResult<()> {
        let vs: Vec<builder::Var> = vs.into_iter().map(|t| t.0).collect();
        self.get()?.output_vec(name, &vs);
        Ok(())
    }

    /// Finishes and validates the circuit.
    fn build(&mut self) -> PyResult<Circuit> {
        let b = self
            .0
            .take()
            .ok_or_else(|| PyRuntimeError::new_err("this builder was already built"))?;
        let c = b.build().map_err(value_error)?;
        Ok(Circuit(Arc::new(c)))
    }
}

/// A plain Python int or a tracer, as an operand.
fn operand(o: &Bound<'_, PyAny>) -> PyResult<Plain> {
    if let Ok(t) = o.extract::<PyRef<'_, Tracer>>() {
        return Ok(Plain::Var(t.0.clone()));
    }
    if o.is_instance_of::<pyo3::types::PyBool>() {
        return Ok(Plain::Int(i128::from(o.extract::<bool>()?)));
    }
    match o.extract::<i128>() {
        Ok(v) => Ok(Plain::Int(v)),
        Err(_) => Err(PyTypeError::new_err(format!(
            "cannot compute with a {} and an encrypted value (ints and encrypted values only)",
            o.get_type().name()?
        ))),
    }
}

fn small(o: &Bound<'_, PyAny>, what: &str) -> PyResult<i64> {
    o.extract::<i64>()
        .map_err(|_| PyTypeError::new_err(format!("{what} takes a plain int")))
}

#[pymethods]
impl Tracer {
    /// The value's type, e.g. `"u16"`.
    #[getter]
    fn ty(&self) -> String {
        type_name(self.0.ty())
    }

    fn __repr__(&self) -> String {
        format!("<encrypted {} #{}>", type_name(self.0.ty()), self.0.id())
    }

    fn __bool__(&self) -> PyResult<bool> {
        Err(PyTypeError::new_err(
            "an encrypted value has no truth value while tracing: use tenebra.where(cond, a, b) \
             instead of if/else, and tenebra.min/max instead of min()/max()",
        ))
    }

    fn __add__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 + operand(o)?))
    }
    fn __radd__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        self.__add__(o)
    }
    fn __sub__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 - operand(o)?))
    }
    fn __rsub__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        // c - x = (-x) + c, in the wrapping arithmetic of the type.
        Ok(Tracer(-&self.0 + operand(o)?))
    }
    fn __mul__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 * operand(o)?))
    }
    fn __rmul__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        self.__mul__(o)
    }
    fn __and__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 & operand(o)?))
    }
    fn __rand__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        self.__and__(o)
    }
    fn __or__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 | operand(o)?))
    }
    fn __ror__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        self.__or__(o)
    }
    fn __xor__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 ^ operand(o)?))
    }
    fn __rxor__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        self.__xor__(o)
    }
    fn __floordiv__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 / small(o, "//")?))
    }
    fn __mod__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 % small(o, "%")?))
    }
    fn __lshift__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 << small(o, "<<")?))
    }
    fn __rshift__(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(&self.0 >> small(o, ">>")?))
    }
    fn __neg__(&self) -> Tracer {
        Tracer(-&self.0)
    }
    fn __invert__(&self) -> Tracer {
        Tracer(!&self.0)
    }

    fn __richcmp__(&self, o: &Bound<'_, PyAny>, op: pyo3::basic::CompareOp) -> PyResult<Tracer> {
        use pyo3::basic::CompareOp::*;
        let o = operand(o)?;
        Ok(Tracer(match op {
            Lt => self.0.lt(o),
            Le => self.0.le(o),
            Gt => self.0.gt(o),
            Ge => self.0.ge(o),
            Eq => self.0.eq(o),
            Ne => self.0.ne(o),
        }))
    }

    /// The smaller of this and `o`.
    fn min(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(self.0.min(operand(o)?)))
    }

    /// The larger of this and `o`.
    fn max(&self, o: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(self.0.max(operand(o)?)))
    }

    /// `a` where this (a bool) is true, else `b`.
    fn select(&self, a: &Bound<'_, PyAny>, b: &Bound<'_, PyAny>) -> PyResult<Tracer> {
        Ok(Tracer(self.0.select(operand(a)?, operand(b)?)))
    }

    /// This value converted to type `ty` (wrapping or extending).
    fn cast(&self, ty: &str) -> PyResult<Tracer> {
        Ok(Tracer(self.0.cast(parse_type(ty)?)))
    }

    /// `table[x]` as type `ty` (a table of one entry per value of this type).
    fn lut(&self, table: Vec<i128>, ty: &str) -> PyResult<Tracer> {
        Ok(Tracer(self.0.lut(&table, parse_type(ty)?)))
    }
}

fn vars(vs: Vec<Tracer>, what: &str) -> PyResult<Vec<builder::Var>> {
    if vs.is_empty() {
        return Err(value_error(format!("{what} of an empty list")));
    }
    Ok(vs.into_iter().map(|t| t.0).collect())
}

/// Sum of encrypted values (one node; the type is the elements' type, wrapping).
/// Checks an encrypted type name as circuits read it (`tenebra.Type` calls it, so a bad
/// name fails where it is written, not at the first circuit that uses it).
#[pyfunction]
fn check_type(name: &str) -> PyResult<()> {
    parse_type(name).map(|_| ())
}

#[pyfunction]
fn sum(vs: Vec<Tracer>) -> PyResult<Tracer> {
    Ok(Tracer(builder::sum(&vars(vs, "sum")?)))
}

/// Smallest of encrypted values.
#[pyfunction]
fn min_of(vs: Vec<Tracer>) -> PyResult<Tracer> {
    Ok(Tracer(builder::min_of(&vars(vs, "min")?)))
}

/// Largest of encrypted values.
#[pyfunction]
fn max_of(vs: Vec<Tracer>) -> PyResult<Tracer> {
    Ok(Tracer(builder::max_of(&vars(vs, "max")?)))
}

/// Index of the first largest value, as type `ty`.
#[pyfunction]
fn argmax(vs: Vec<Tracer>, ty: &str) -> PyResult<Tracer> {
    Ok(Tracer(builder::argmax(
        &vars(vs, "argmax")?,
        parse_type(ty)?,
    )))
}

/// Dot product with plain integer weights.
#[pyfunction]
fn dot(vs: Vec<Tracer>, weights: Vec<i64>) -> PyResult<Tracer> {
    Ok(Tracer(builder::dot(&vars(vs, "dot")?, &weights)))
}

/// A finished, validated circuit.
#[pyclass(frozen, from_py_object, module = "tenebra._native")]
#[derive(Clone)]
struct Circuit(Arc<ValidCircuit>);

#[pymethods]
impl Circuit {
    /// Parses canonical circuit JSON (validated under the default limits).
    #[staticmethod]
    fn from_json(text: &str) -> PyResult<Circuit> {
        let c = tenebra_circuit::parse_circuit(text.as_bytes(), &Default::default())
            .map_err(value_error)?;
        Ok(Circuit(Arc::new(c)))
    }

    #[getter]
    fn name(&self) -> String {
        self.0.name.clone()
    }

    /// The content id: SHA-256 of the canonical JSON, hex.
    #[getter]
    fn id(&self) -> String {
        self.0.id().to_string()
    }

    /// The canonical JSON (the same bytes the Rust builder makes for the same computation).
    fn json(&self) -> String {
        String::from_utf8_lossy(&self.0.canonical_json()).into_owned()
    }

    /// Runs the plaintext evaluator: `{"input": value, ...}` -> `{"output": value, ...}`.
    fn simulate<'py>(
        &self,
        py: Python<'py>,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = to_json(inputs)?;
        let values = tenebra_circuit::io::encode_inputs(&self.0, &json).map_err(value_error)?;
        let out = tenebra_circuit::eval::evaluate(&self.0, &values);
        to_py(py, &tenebra_circuit::io::decode_outputs(&self.0, &out))
    }

    /// Cost in compute units (CU), as the server prices it.
    fn cost(&self) -> u64 {
        tenebra_circuit::cost::cost(&self.0).cu
    }

    /// `{"name": type}` of the inputs, e.g. `{"xs": "u8[3]"}`.
    fn signature(&self) -> String {
        let (ins, outs) = self.0.signature_lists();
        format!("({ins}) -> ({outs})")
    }

    fn __repr__(&self) -> String {
        format!("<Circuit {} {}>", self.0.name, self.signature())
    }
}

/// A key set: the client key stays here; the evaluation and public keys go to a server.
#[pyclass(frozen, module = "tenebra._native")]
struct Keys {
    keys: Arc<ClientKeys>,
    dir: PathBuf,
}

/// What to encrypt for: a built-in's name, or a circuit.
enum Target {
    Builtin(&'static tenebra_functions::Builtin),
    Circuit(Arc<ValidCircuit>),
}

fn target(f: &Bound<'_, PyAny>) -> PyResult<Target> {
    if let Ok(c) = f.extract::<PyRef<'_, Circuit>>() {
        return Ok(Target::Circuit(c.0.clone()));
    }
    let name: String = f
        .extract()
        .map_err(|_| PyTypeError::new_err("expected a built-in's name or a Circuit"))?;
    tenebra_functions::find(&name)
        .map(Target::Builtin)
        .map_err(value_error)
}

#[pymethods]
impl Keys {
    /// Generates a new key set into `dir` (seconds: runs in Rust, GIL released).
    #[staticmethod]
    fn generate(py: Python<'_>, dir: PathBuf) -> PyResult<Keys> {
        let keys = py
            .detach(|| ClientKeys::generate(&dir))
            .map_err(value_error)?;
        Ok(Keys {
            keys: Arc::new(keys),
            dir,
        })
    }

    /// Loads the key set in `dir` (only the client key and manifest are read).
    #[staticmethod]
    fn load(py: Python<'_>, dir: PathBuf) -> PyResult<Keys> {
        let keys = py.detach(|| ClientKeys::load(&dir)).map_err(value_error)?;
        Ok(Keys {
            keys: Arc::new(keys),
            dir,
        })
    }

    /// The key set id (its fingerprint; what a server knows it by).
    #[getter]
    fn id(&self) -> String {
        self.keys.id().to_string()
    }

    /// The directory the set lives in.
    #[getter]
    fn dir(&self) -> PathBuf {
        self.dir.clone()
    }

    /// Encrypts `inputs` (a dict of ints / lists) for a built-in (by name) or a Circuit;
    /// returns the input bundle to submit.
    fn encrypt<'py>(
        &self,
        py: Python<'py>,
        function: &Bound<'py, PyAny>,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyBytes>> {
        let json = to_json(inputs)?;
        let target = target(function)?;
        let keys = self.keys.clone();
        let bytes = py
            .detach(move || match target {
                Target::Builtin(f) => tenebra_client::encrypt(&keys, f, &json),
                Target::Circuit(c) => tenebra_client::encrypt_circuit(&keys, &c, &json),
            })
            .map_err(value_error)?;
        Ok(PyBytes::new(py, &bytes))
    }

    /// Decrypts a result bundle of a built-in (by name) or a Circuit into a dict.
    fn decrypt<'py>(
        &self,
        py: Python<'py>,
        function: &Bound<'py, PyAny>,
        result: Vec<u8>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let target = target(function)?;
        let keys = self.keys.clone();
        let v = py
            .detach(move || match target {
                Target::Builtin(f) => tenebra_client::decrypt(&keys, f, &result),
                Target::Circuit(c) => tenebra_client::decrypt_circuit(&keys, &c, &result),
            })
            .map_err(value_error)?;
        to_py(py, &v)
    }

    fn __repr__(&self) -> String {
        format!("<Keys {} in {}>", self.keys.id(), self.dir.display())
    }
}

/// A built-in's plaintext result: what the encrypted run decrypts to.
#[pyfunction]
fn simulate_builtin<'py>(
    py: Python<'py>,
    function: &str,
    inputs: &Bound<'py, PyAny>,
) -> PyResult<Bound<'py, PyAny>> {
    let f = tenebra_functions::builtin(function).map_err(value_error)?;
    let v = f.simulate(&to_json(inputs)?).map_err(value_error)?;
    to_py(py, &v)
}

/// A built-in's circuit at an input size.
#[pyfunction]
fn builtin_circuit(function: &str, size: u32) -> PyResult<Circuit> {
    let f = tenebra_functions::find(function).map_err(value_error)?;
    Ok(Circuit(Arc::new(f.circuit(size).map_err(value_error)?)))
}

fn api_error(e: HttpError) -> PyErr {
    match e {
        HttpError::Api {
            status,
            code,
            message,
        } => ApiError::new_err((status, code, message)),
        e => PyRuntimeError::new_err(e.to_string()),
    }
}

/// A blocking client for one server and one API key.
#[pyclass(frozen, module = "tenebra._native")]
struct Client {
    http: http::Client,
    rt: tokio::runtime::Runtime,
}

impl Client {
    /// Runs a request with the GIL released.
    fn run<T: Send>(
        &self,
        py: Python<'_>,
        f: impl std::future::Future<Output = Result<T, HttpError>> + Send,
    ) -> PyResult<T> {
        py.detach(|| self.rt.block_on(f)).map_err(api_error)
    }
}

#[pymethods]
impl Client {
    #[new]
    fn new(url: &str, api_key: &str) -> PyResult<Self> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| PyRuntimeError::new_err(e.to_string()))?;
        Ok(Client {
            http: http::Client::new(url, api_key),
            rt,
        })
    }

    /// Uploads the evaluation and public keys of `keys` (never the client key); calls
    /// `progress(sent, total)` as the bytes go. Returns the key set record.
    #[pyo3(signature = (keys, ttl_secs=None, progress=None))]
    fn upload_key_set<'py>(
        &self,
        py: Python<'py>,
        keys: &Keys,
        ttl_secs: Option<u64>,
        progress: Option<Py<PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let dir = keys.dir.clone();
        let upload = py
            .detach(|| tenebra_engine::keys::read_upload(&dir))
            .map_err(value_error)?;
        let report = move |sent: u64, total: u64| {
            if let Some(cb) = &progress {
                Python::attach(|py| {
                    if let Err(e) = cb.call1(py, (sent, total)) {
                        e.write_unraisable(py, None);
                    }
                });
            }
        };
        let ks = self.run(
            py,
            self.http
                .upload_key_set_with_progress(upload, ttl_secs, report),
        )?;
        to_py(py, &ks)
    }

    /// The tenant's key sets.
    fn key_sets<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.run(py, self.http.key_sets())?;
        to_py(py, &v)
    }

    /// Deploys a circuit as the next version of its name; returns the function record.
    fn deploy<'py>(&self, py: Python<'py>, circuit: &Circuit) -> PyResult<Bound<'py, PyAny>> {
        let body = circuit.0.canonical_json();
        let v = self.run(py, self.http.deploy_function(body))?;
        to_py(py, &v)
    }

    /// The built-ins and the tenant's deployed functions.
    fn functions<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.run(py, self.http.functions())?;
        to_py(py, &v)
    }

    /// The circuit of the tenant's deployed function (latest version).
    fn function_circuit(&self, py: Python<'_>, name: &str) -> PyResult<Circuit> {
        let bytes = self.run(py, self.http.function_circuit(name, None, None))?;
        let c = tenebra_circuit::parse_circuit(&bytes, &Default::default()).map_err(value_error)?;
        Ok(Circuit(Arc::new(c)))
    }

    /// Submits an encrypted input; returns the task.
    #[pyo3(signature = (input, idempotency_key=None))]
    fn submit<'py>(
        &self,
        py: Python<'py>,
        input: Vec<u8>,
        idempotency_key: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = self.run(py, self.http.submit_task(input, idempotency_key.as_deref()))?;
        to_py(py, &t)
    }

    /// A task's status.
    fn task<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let t = self.run(py, self.http.task(id))?;
        to_py(py, &t)
    }

    /// Waits until the task is final (long polls); returns it.
    fn wait<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let t = self.run(py, self.http.wait_task(id, |_| {}))?;
        to_py(py, &t)
    }

    /// A succeeded task's encrypted result.
    fn result<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyBytes>> {
        let b = self.run(py, self.http.task_result(id))?;
        Ok(PyBytes::new(py, &b))
    }

    /// Cancels a task; returns it as it is now.
    fn cancel<'py>(&self, py: Python<'py>, id: &str) -> PyResult<Bound<'py, PyAny>> {
        let t = self.run(py, self.http.cancel_task(id))?;
        to_py(py, &t)
    }

    /// One page of the tenant's tasks, newest first.
    #[pyo3(signature = (status=None, limit=50, after=None))]
    fn tasks<'py>(
        &self,
        py: Python<'py>,
        status: Option<String>,
        limit: u32,
        after: Option<String>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let p = self.run(
            py,
            self.http.tasks(status.as_deref(), limit, after.as_deref()),
        )?;
        to_py(py, &p)
    }

    /// Usage records and totals; `filters` holds from, to, function, api_key_id, limit, after.
    #[pyo3(signature = (**filters))]
    fn usage<'py>(
        &self,
        py: Python<'py>,
        filters: Option<&Bound<'py, PyDict>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let mut q: Vec<(String, String)> = Vec::new();
        if let Some(f) = filters {
            for (k, v) in f.iter() {
                q.push((k.extract()?, v.str()?.extract()?));
            }
        }
        let q: Vec<(&str, String)> = q.iter().map(|(k, v)| (k.as_str(), v.clone())).collect();
        let u = self.run(py, self.http.usage(&q))?;
        to_py(py, &u)
    }

    /// What running a function costs before running it.
    #[pyo3(signature = (function, size=0))]
    fn quote<'py>(
        &self,
        py: Python<'py>,
        function: &str,
        size: u32,
    ) -> PyResult<Bound<'py, PyAny>> {
        let q = http::QuoteRequest {
            function: function.to_owned(),
            size,
            version: None,
            circuit_id: None,
        };
        let v = self.run(py, self.http.quote(&q))?;
        to_py(py, &v)
    }

    /// The tenant's plan and current usage.
    fn limits<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let v = self.run(py, self.http.limits())?;
        to_py(py, &v)
    }

    /// The SDK's one-shot run (`tenebra_client::Client::run`): encrypts `inputs` for
    /// `function` (a built-in of either scheme, a model split or a deployed function) with
    /// the keys in `keys`' directory, uploads the key set if the server lacks it, submits,
    /// waits, downloads and decrypts.
    fn run_function<'py>(
        &self,
        py: Python<'py>,
        keys: &Keys,
        function: &str,
        inputs: &Bound<'py, PyAny>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let json = to_json(inputs)?;
        let dir = keys.dir.clone();
        let out = py.detach(|| self.rt.block_on(self.http.run(&dir, function, &json)));
        match out {
            Ok(v) => to_py(py, &v),
            Err(RunError::Http(e)) => Err(api_error(e)),
            Err(RunError::Task {
                status,
                code,
                message,
                ..
            }) => Err(ApiError::new_err((
                409u16,
                if code.is_empty() { status } else { code },
                message,
            ))),
            Err(e) => Err(value_error(e)),
        }
    }
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_class::<Builder>()?;
    m.add_class::<Tracer>()?;
    m.add_class::<Circuit>()?;
    m.add_class::<Keys>()?;
    m.add_class::<Client>()?;
    m.add_function(wrap_pyfunction!(check_type, m)?)?;
    m.add_function(wrap_pyfunction!(sum, m)?)?;
    m.add_function(wrap_pyfunction!(min_of, m)?)?;
    m.add_function(wrap_pyfunction!(max_of, m)?)?;
    m.add_function(wrap_pyfunction!(argmax, m)?)?;
    m.add_function(wrap_pyfunction!(dot, m)?)?;
    m.add_function(wrap_pyfunction!(simulate_builtin, m)?)?;
    m.add_function(wrap_pyfunction!(builtin_circuit, m)?)?;
    m.add("ApiError", m.py().get_type::<ApiError>())?;
    Ok(())
}
