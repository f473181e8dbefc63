//! Images: references, registry pulls with oci-client, safe layer unpacking (owned by the image work).
