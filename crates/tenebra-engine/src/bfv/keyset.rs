//! The server side of keys: which keys a function needs, the key set header, and the
//! uploaded key set, checked at upload and decoded once per plaintext modulus.

use super::*;

/// Which keys a BFV function needs: the degree, its column rotations, row swap and
/// relinearization. A key set serves a function when it covers these.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeyNeeds {
    pub degree: usize,
    pub rotations: BTreeSet<usize>,
    pub row_swap: bool,
    pub relin: bool,
}

impl KeyNeeds {
    pub fn of(plan: &BfvPlan) -> Self {
        Self {
            degree: plan.degree,
            rotations: plan.rotations.clone(),
            row_swap: plan.row_swap,
            relin: plan.relin,
        }
    }

    /// What a circuit with this signature needs.
    pub fn of_signature(sig: &BfvSignature) -> Self {
        Self {
            degree: sig.degree,
            rotations: sig.rotations.clone(),
            row_swap: sig.row_swap,
            relin: sig.relin,
        }
    }

    /// The union with `other` (same degree).
    pub fn union(mut self, other: &KeyNeeds) -> Self {
        self.rotations.extend(other.rotations.iter().copied());
        self.row_swap |= other.row_swap;
        self.relin |= other.relin;
        self
    }

    /// What of `need` this key set lacks, in words; `None` if it covers it.
    pub fn missing(&self, need: &KeyNeeds) -> Option<String> {
        if self.degree != need.degree {
            return Some(format!(
                "the function runs at ring degree {}, the key set is for {}",
                need.degree, self.degree
            ));
        }
        let lacking: Vec<usize> = need
            .rotations
            .difference(&self.rotations)
            .copied()
            .collect();
        let mut parts = Vec::new();
        if !lacking.is_empty() {
            parts.push(format!("Galois keys for rotations {lacking:?}"));
        }
        if need.row_swap && !self.row_swap {
            parts.push("the row-swap Galois key".into());
        }
        if need.relin && !self.relin {
            parts.push("a relinearization key".into());
        }
        (!parts.is_empty()).then(|| format!("the key set lacks {}", parts.join(", ")))
    }
}

/// The JSON header of a BFV key set upload.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySetHeader {
    pub version: u32,
    pub scheme: String,
    #[serde(flatten)]
    pub needs: KeyNeeds,
    /// Byte lengths of the public key, relinearization key (0 if none) and evaluation key.
    pub sizes: [u64; 3],
}
/// Keys decoded per plaintext modulus.
pub(super) type Decoded = Vec<(u64, Arc<Evaluator>)>;

/// A BFV key set as the server holds it: its header and raw bytes, checked at upload.
#[derive(Clone)]
pub struct BfvKeySet {
    pub header: KeySetHeader,
    bytes: Arc<Vec<u8>>,
    body: usize,
    /// Keys decoded per plaintext modulus (decoding takes longer than a small run).
    decoded: Arc<Mutex<Decoded>>,
}

impl std::fmt::Debug for BfvKeySet {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BfvKeySet")
            .field("header", &self.header)
            .finish()
    }
}

impl BfvKeySet {
    /// Parses and checks an untrusted key set upload: framing, header, sizes, and every key
    /// decoded against the parameters; the evaluation key must hold exactly the Galois keys
    /// the header lists.
    pub fn parse(bytes: Vec<u8>) -> Result<Self, EngineError> {
        if bytes.len() as u64 > KEY_SET_LIMIT {
            return Err(EngineError::BadInput(format!(
                "the key set is over the {KEY_SET_LIMIT}-byte limit"
            )));
        }
        let (header, payload): (KeySetHeader, &[u8]) = bundle::read_as(&bytes, Kind::KeySet)?;
        let bad = |m: String| EngineError::BadInput(format!("not a valid BFV key set: {m}"));
        if header.version != BFV_VERSION || header.scheme != SCHEME_BFV {
            return Err(bad(format!(
                "version {} / scheme `{}` (expected {BFV_VERSION} / `{SCHEME_BFV}`)",
                header.version, header.scheme
            )));
        }
        if header.sizes.iter().sum::<u64>() != payload.len() as u64 {
            return Err(bad("the key sizes do not add up to the payload".into()));
        }
        if header
            .needs
            .rotations
            .iter()
            .any(|r| *r == 0 || *r >= header.needs.degree / 2)
        {
            return Err(bad("a rotation is outside 1..degree/2".into()));
        }
        if header.needs.relin != (header.sizes[1] > 0) {
            return Err(bad(
                "the relinearization key does not match the header".into()
            ));
        }
        let body = bytes.len() - payload.len();
        let set = Self {
            header,
            bytes: Arc::new(bytes),
            body,
            decoded: Arc::default(),
        };
        set.keys(CHECK_MODULUS)?;
        Ok(set)
    }

    /// The key set id: SHA-256 of the upload.
    pub fn id(&self) -> String {
        hex::encode(Sha256::digest(self.bytes.as_slice()))
    }

    /// The upload bytes (what is stored).
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    fn section(&self, i: usize) -> &[u8] {
        let s = self.header.sizes;
        let start = self.body + s[..i].iter().sum::<u64>() as usize;
        &self.bytes[start..start + s[i] as usize]
    }

    /// The keys decoded at plaintext modulus `t`, kept for the next runs (a few moduli).
    pub fn evaluator(&self, t: u64) -> Result<Arc<Evaluator>, EngineError> {
        if let Some((_, e)) = self
            .decoded
            .lock()
            .map_err(internal)?
            .iter()
            .find(|(m, _)| *m == t)
        {
            return Ok(e.clone());
        }
        let e = Arc::new(self.keys(t)?);
        let mut d = self.decoded.lock().map_err(internal)?;
        if d.len() >= 4 {
            d.remove(0);
        }
        d.push((t, e.clone()));
        Ok(e)
    }

    /// The keys, decoded at plaintext modulus `t`.
    fn keys(&self, t: u64) -> Result<Evaluator, EngineError> {
        let par = parameters(self.header.needs.degree, t)?;
        guarded("the key set", || {
            let bad = |what: &str, e: fhe::Error| {
                EngineError::BadInput(format!("not a valid BFV key set: {what}: {e}"))
            };
            PublicKey::from_bytes(self.section(0), &par).map_err(|e| bad("public key", e))?;
            let rk = if self.header.needs.relin {
                Some(
                    RelinearizationKey::from_bytes(self.section(1), &par)
                        .map_err(|e| bad("relinearization key", e))?,
                )
            } else {
                None
            };
            let ek = EvaluationKey::from_bytes(self.section(2), &par)
                .map_err(|e| bad("evaluation key", e))?;
            let needs = &self.header.needs;
            for r in &needs.rotations {
                if !ek.supports_column_rotation_by(*r) {
                    return Err(EngineError::BadInput(format!(
                        "not a valid BFV key set: the header lists rotation {r} but the \
                         evaluation key has no Galois key for it"
                    )));
                }
            }
            if needs.row_swap && !ek.supports_row_rotation() {
                return Err(EngineError::BadInput(
                    "not a valid BFV key set: the row-swap key is missing".into(),
                ));
            }
            Ok(Evaluator { par, ek, rk })
        })
    }
}

/// Keys decoded at one plaintext modulus: what a run needs.
pub struct Evaluator {
    pub(super) par: Arc<BfvParameters>,
    pub(super) ek: EvaluationKey,
    pub(super) rk: Option<RelinearizationKey>,
}

impl Evaluator {
    pub(super) fn rotate(&self, ct: &Ciphertext, r: usize) -> Result<Ciphertext, EngineError> {
        self.ek.rotates_columns_by(ct, r).map_err(|e| {
            EngineError::BadInput(format!("rotation by {r}: {e} (the key set lacks its key)"))
        })
    }
}
