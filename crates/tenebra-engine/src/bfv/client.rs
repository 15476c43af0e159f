//! The client side: the secret key per ring degree in a key directory, key set generation
//! with only the Galois keys a function needs, encryption against a signature, decryption,
//! and the noise budget left in a result.

use super::*;

/// Key file of the secret key for `degree` in a key set directory.
pub fn secret_key_file(degree: usize) -> String {
    format!("bfv-{degree}.key")
}

/// The client's secret key for one ring degree (never leaves the client).
pub struct BfvSecret {
    degree: usize,
    bytes: zeroize::Zeroizing<Vec<u8>>,
}

impl BfvSecret {
    /// A fresh secret key.
    pub fn generate(degree: usize) -> Result<Self, EngineError> {
        let par = parameters(degree, CHECK_MODULUS)?;
        let sk = SecretKey::random(&par, &mut rand09::rng());
        Ok(Self {
            degree,
            bytes: sk.to_bytes().into(),
        })
    }

    /// Loads the key for `degree` from a key set directory.
    pub fn load(dir: &Path, degree: usize) -> Result<Self, EngineError> {
        let path = dir.join(secret_key_file(degree));
        let bytes = std::fs::read(&path).map_err(|e| {
            EngineError::BadInput(format!(
                "{}: {e} (no BFV secret key for ring degree {degree} in this key set)",
                path.display()
            ))
        })?;
        let s = Self {
            degree,
            bytes: bytes.into(),
        };
        s.key(CHECK_MODULUS)?;
        Ok(s)
    }

    /// Loads the key for `degree` from a key set directory, generating and saving it first if
    /// it is not there.
    pub fn load_or_generate(dir: &Path, degree: usize) -> Result<Self, EngineError> {
        let path = dir.join(secret_key_file(degree));
        match std::fs::read(&path) {
            Ok(bytes) => {
                let s = Self {
                    degree,
                    bytes: bytes.into(),
                };
                s.key(CHECK_MODULUS)?;
                Ok(s)
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                let s = Self::generate(degree)?;
                std::fs::create_dir_all(dir).map_err(|e| EngineError::Io(e.to_string()))?;
                crate::keys::write_private(&path, &s.bytes)?;
                Ok(s)
            }
            Err(e) => Err(EngineError::Io(format!("{}: {e}", path.display()))),
        }
    }

    pub fn degree(&self) -> usize {
        self.degree
    }

    fn key(&self, t: u64) -> Result<SecretKey, EngineError> {
        let par = parameters(self.degree, t)?;
        guarded("the secret key file", || {
            SecretKey::from_bytes(&self.bytes, &par)
                .map_err(|e| EngineError::BadInput(format!("the secret key file: {e}")))
        })
    }

    /// The key set to upload for `needs` (public key, relinearization and Galois keys).
    pub fn key_set(&self, needs: &KeyNeeds) -> Result<Vec<u8>, EngineError> {
        if needs.degree != self.degree {
            return Err(internal("key set degree differs from the secret key's"));
        }
        let sk = self.key(CHECK_MODULUS)?;
        let rng = &mut rand09::rng();
        let pk = PublicKey::new(&sk, rng).to_bytes();
        let rk = if needs.relin {
            RelinearizationKey::new(&sk, rng)
                .map_err(internal)?
                .to_bytes()
        } else {
            Vec::new()
        };
        let mut builder = EvaluationKeyBuilder::new(&sk).map_err(internal)?;
        for r in &needs.rotations {
            builder.enable_column_rotation(*r).map_err(|e| {
                EngineError::BadInput(format!("rotation {r} at degree {}: {e}", self.degree))
            })?;
        }
        if needs.row_swap {
            builder.enable_row_rotation().map_err(internal)?;
        }
        let ek = builder.build(rng).map_err(internal)?.to_bytes();
        let header = KeySetHeader {
            version: BFV_VERSION,
            scheme: SCHEME_BFV.into(),
            needs: needs.clone(),
            sizes: [pk.len() as u64, rk.len() as u64, ek.len() as u64],
        };
        let payload = [pk, rk, ek].concat();
        bundle::write(Kind::KeySet, &header, &payload)
    }

    /// Encrypts the inputs of a BFV circuit (lengths and ranges checked against its
    /// signature).
    pub fn encrypt(
        &self,
        sig: &BfvSignature,
        function: &str,
        key_set_id: &str,
        inputs: &[Vec<i64>],
    ) -> Result<Vec<u8>, EngineError> {
        if inputs.len() != sig.inputs.len() {
            return Err(EngineError::BadInput(format!(
                "{} inputs for {} declared",
                inputs.len(),
                sig.inputs.len()
            )));
        }
        for (v, i) in inputs.iter().zip(&sig.inputs) {
            if v.len() != i.len as usize {
                return Err(EngineError::BadInput(format!(
                    "input `{}` takes {} values, got {}",
                    i.name,
                    i.len,
                    v.len()
                )));
            }
            if let Some(x) = v.iter().find(|x| **x < i.min || **x > i.max) {
                return Err(EngineError::BadInput(format!(
                    "input `{}`: {x} is outside its range {}..={}",
                    i.name, i.min, i.max
                )));
            }
        }
        let par = parameters(sig.degree, sig.plain_modulus)?;
        let sk = self.key(sig.plain_modulus)?;
        let rng = &mut rand09::rng();
        let mut cts = Vec::new();
        let mut counts = Vec::new();
        for (v, i) in inputs.iter().zip(&sig.inputs) {
            let slots = sig.layout(i.len as usize).place(v, sig.degree);
            counts.push(slots.len() as u32);
            for s in slots {
                let pt = Plaintext::try_encode(&s, Encoding::simd(), &par).map_err(internal)?;
                let ct: Ciphertext = sk.try_encrypt(&pt, rng).map_err(internal)?;
                cts.push(ct.to_bytes());
            }
        }
        let header = BfvHeader {
            version: BFV_VERSION,
            scheme: SCHEME_BFV.into(),
            function: function.into(),
            circuit_id: sig.circuit_id.clone(),
            key_set_id: key_set_id.into(),
            degree: sig.degree,
            plain_modulus: sig.plain_modulus,
            counts,
        };
        bundle::write(Kind::Input, &header, &frame(&cts))
    }

    /// Decrypts a result bundle made by [`run`] for the circuit of `sig`: one vector per
    /// output.
    pub fn decrypt(&self, sig: &BfvSignature, result: &[u8]) -> Result<Vec<Vec<i64>>, EngineError> {
        let (header, payload) = read_bundle(result, Kind::Result, sig)?;
        let par = parameters(sig.degree, sig.plain_modulus)?;
        let sk = self.key(sig.plain_modulus)?;
        let total = header.counts.iter().map(|c| *c as usize).sum();
        let mut cts = unframe(payload, &par, total)?.into_iter();
        let mut out = Vec::new();
        for (i, o) in sig.outputs.iter().enumerate() {
            let layout = sig.layout(o.len);
            if header.counts.get(i) != Some(&(layout.ciphertexts() as u32)) {
                return Err(EngineError::BadInput(format!(
                    "the result's output `{}` has the wrong number of ciphertexts",
                    o.name
                )));
            }
            let mut slots = Vec::new();
            for _ in 0..layout.ciphertexts() {
                let ct = cts.next().ok_or_else(|| internal("missing ciphertext"))?;
                let pt = guarded("the result", || sk.try_decrypt(&ct).map_err(internal))?;
                slots.push(Vec::<i64>::try_decode(&pt, Encoding::simd()).map_err(internal)?);
            }
            out.push(layout.read(&slots, o.len, sig.degree));
        }
        Ok(out)
    }

    /// Remaining noise budget of a ciphertext, in bits (for tests and diagnostics).
    pub fn noise_budget(&self, circuit: &ValidBfv, result: &[u8]) -> Result<f64, EngineError> {
        let plan = circuit.plan();
        let (_, payload) = read_bundle(result, Kind::Result, &circuit.signature())?;
        let par = parameters(plan.degree, plan.plain_modulus)?;
        let sk = self.key(plan.plain_modulus)?;
        let cts = unframe(payload, &par, usize::MAX)?;
        let q_bits: f64 = par.moduli().iter().map(|m| (*m as f64).log2()).sum();
        let t_bits = (plan.plain_modulus as f64).log2();
        let mut least = f64::MAX;
        for ct in &cts {
            // Memory-safe: `measure_noise` is `unsafe` only because its timing depends on the
            // secret key, and this runs on the client, on its own key and result.
            #[allow(unsafe_code)]
            let noise = unsafe { sk.measure_noise(ct) }.map_err(internal)? as f64;
            least = least.min(q_bits - t_bits - noise - 1.0);
        }
        Ok(least)
    }
}
