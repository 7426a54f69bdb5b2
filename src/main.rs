#![forbid(unsafe_code)]
use kube::CustomResourceExt;
fn main() {
    for crd in [secret_relay::api::ExternalSecret::crd(), secret_relay::api::SecretStore::crd(), secret_relay::api::ClusterSecretStore::crd()] {
        println!("---\n{}", serde_yaml::to_string(&crd).unwrap());
    }
}
