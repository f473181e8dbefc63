//! Images: references, registry pulls with oci-client, safe layer unpacking (owned by the image work).

/// Placeholder until the image work lands.
pub fn cli_pull(_args: &[String]) -> anyhow::Result<()> {
    anyhow::bail!("iguana pull: not built yet")
}
