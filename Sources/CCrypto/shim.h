#ifndef CCRYPTO_SHIM_H
#define CCRYPTO_SHIM_H
/* OpenSSL's SHA-1 (EVP), for the checksums of the packs mvc writes itself (see PackWriter). */
#include <openssl/evp.h>
#endif
