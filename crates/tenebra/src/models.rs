//! `tenebra models ...`: the model repository on a server, and encrypted inference on its
//! models (whole, or split: the first layers encrypted on the server, the rest in plaintext
//! here when the owner shares them). Each is one or a few calls of the SDK's HTTP client.

use anyhow::{bail, Result};
use serde_json::{json, Value};
use tenebra_client::http::HttpError;
use tenebra_functions::model::model_function;

use crate::args::{ModelRef, ModelsCommand, ServerArgs};
use crate::io::{read_json, read_limited, runtime, JSON_LIMIT};
use crate::output::{print_json, run_with_bar};

/// ONNX files are read up to the server's model upload limit.
const ONNX_LIMIT: u64 = 64 << 20;

pub fn models(server: &ServerArgs, command: ModelsCommand) -> Result<()> {
    let client = server.client()?;
    runtime()?.block_on(async {
        match command {
            ModelsCommand::Upload {
                file,
                onnx,
                name,
                input_min,
                input_max,
            } => {
                let view = match (file, onnx, name, input_min, input_max) {
                    (Some(file), ..) => {
                        client.upload_model(read_limited(&file, JSON_LIMIT)?).await?
                    }
                    (None, Some(onnx), Some(name), Some(lo), Some(hi)) => {
                        let bytes = read_limited(&onnx, ONNX_LIMIT)?;
                        client.upload_onnx_model(bytes, &name, lo, hi).await?
                    }
                    _ => bail!("give --file MODEL.json, or --onnx FILE --name N --input-min A --input-max B"),
                };
                eprintln!(
                    "uploaded {}/{} version {}",
                    view.owner_id, view.name, view.version
                );
                print_json(&view)
            }
            ModelsCommand::List => print_json(&client.models().await?),
            ModelsCommand::Show { model, version } => {
                print_json(&client.model(&model.owner, &model.name, version).await?)
            }
            ModelsCommand::Signature {
                model,
                layers,
                version,
            } => print_json(
                &client
                    .model_signature(&model.owner, &model.name, version, layers)
                    .await?,
            ),
            ModelsCommand::Grant {
                name,
                tenant,
                share_layers,
            } => {
                let g = client.grant_model(&name, &tenant, share_layers).await?;
                eprintln!("offered {name} to {tenant}: it must accept (`tenebra models accept`)");
                print_json(&g)
            }
            ModelsCommand::Revoke { name, tenant } => {
                client.revoke_model(&name, &tenant).await?;
                Ok(())
            }
            ModelsCommand::Offers => print_json(&client.model_offers().await?),
            ModelsCommand::Accept { model } => {
                print_json(&client.accept_model(&model.owner, &model.name).await?)
            }
            ModelsCommand::Decline { model } => {
                client.decline_model(&model.owner, &model.name).await?;
                Ok(())
            }
            ModelsCommand::Run {
                model,
                keys,
                input,
                layers,
                version,
            } => run(&client, &model, &keys, &read_json(&input)?, layers, version).await,
        }
    })
}

/// `tenebra models run`.
async fn run(
    client: &tenebra_client::http::Client,
    model: &ModelRef,
    keys: &std::path::Path,
    input: &Value,
    layers: Option<usize>,
    version: Option<i64>,
) -> Result<()> {
    let view = client.model(&model.owner, &model.name, version).await?;
    let page = &view.page;
    let k = layers.unwrap_or(page.max_encrypted_layers);
    if k == 0 || k > page.max_encrypted_layers {
        bail!(
            "{}/{} runs 1 to {} layers encrypted (up to its first non-polynomial activation), not {k}",
            model.owner,
            model.name,
            page.max_encrypted_layers
        );
    }
    let function = model_function(&model.owner, &model.name, view.version, k);
    let done = run_with_bar(client, keys, &function, input).await?;
    let activations: Vec<f64> = serde_json::from_value(done.output["y"].clone())?;
    let total = page.layers.len();
    // The rest of the model in plaintext, when its owner shares its layers with us.
    let (prediction, note) = if k == total {
        (Some(activations.clone()), None)
    } else {
        match client
            .model_layers(&model.owner, &model.name, Some(view.version), k)
            .await
        {
            Ok(rest) => (Some(rest.forward(&activations)), None),
            Err(HttpError::Api { status: 403, .. }) => (
                None,
                Some(format!(
                    "layers {}..{total} are not shared with you: `activations` is the output of layer {k}",
                    k + 1
                )),
            ),
            Err(e) => return Err(e.into()),
        }
    };
    let mut out = json!({
        "model": format!("{}/{}", model.owner, model.name),
        "version": view.version,
        "layers_encrypted": k,
        "layers": total,
        "activations": activations,
        "quantized": done.output["quantized"],
        "prediction": prediction,
        "task_id": done.task.id,
        "cost_cu": done.task.cost_cu,
    });
    if let Some(n) = note {
        out["note"] = json!(n);
    }
    print_json(&out)
}
