/* The state tree's work per block in native code (node/chain/tree_levels.py holds the same in Python).
 *
 * A tree of depth D is a list of D + 1 bytearrays, level l holding the 2^l hashes of that level
 * (32 bytes each; level D the leaves, level 0 the root). A node is SHA-256(left || right), or 32 zero
 * bytes when both children are. A set of changed nodes of one level is packed as entries of a 4-byte
 * little-endian index followed by the 32-byte hash, in ascending index order. A bucket's blob is its
 * records kh || vh (64 bytes each) in kh order; its leaf is SHA-256(0x00 || blob), or zero when empty.
 *
 * The Python version spends about a microsecond of interpreter per node hashed, some 10 per key a
 * block writes, and as much again on each key's hashes and its bucket's merge; here each costs its
 * SHA-256 (OpenSSL, with the CPU's SHA instructions) and little more. The GIL is released while
 * hashing keys and nodes: blocks are checked on worker threads.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#define HASH 32
#define ENTRY (4 + HASH)
#define MAX_DEPTH 30

typedef struct {
    uint32_t index;
    unsigned char hash[HASH];
} node_t;

static EVP_MD *sha256;
static const unsigned char zero[HASH];

/* The views of a list of levels, each checked to hold 2^l hashes. Returns the depth, or -1 with an
 * exception set (and no view held). */
static Py_ssize_t open_levels(PyObject *levels, Py_buffer *views) {
    if (!PyList_Check(levels)) {
        PyErr_SetString(PyExc_TypeError, "levels must be a list of bytearrays");
        return -1;
    }
    Py_ssize_t count = PyList_GET_SIZE(levels);
    if (count < 1 || count > MAX_DEPTH + 1) {
        PyErr_SetString(PyExc_ValueError, "a tree has 1 to 31 levels");
        return -1;
    }
    for (Py_ssize_t l = 0; l < count; l++) {
        if (PyObject_GetBuffer(PyList_GET_ITEM(levels, l), &views[l], PyBUF_WRITABLE) < 0) {
            while (l--) PyBuffer_Release(&views[l]);
            return -1;
        }
        if (views[l].len != (Py_ssize_t)HASH << l) {
            PyErr_Format(PyExc_ValueError, "level %zd holds %zd bytes, not %zd", l, views[l].len,
                         (Py_ssize_t)HASH << l);
            for (; l >= 0; l--) PyBuffer_Release(&views[l]);
            return -1;
        }
    }
    return count - 1;
}

static void close_levels(Py_buffer *views, Py_ssize_t depth) {
    for (Py_ssize_t l = 0; l <= depth; l++) PyBuffer_Release(&views[l]);
}

/* out = SHA-256(data); returns 0 when OpenSSL fails. */
static int digest(EVP_MD_CTX *ctx, const void *data, size_t len, unsigned char *out) {
    return EVP_DigestInit_ex2(ctx, sha256, NULL) && EVP_DigestUpdate(ctx, data, len) &&
           EVP_DigestFinal_ex(ctx, out, NULL);
}

/* out = node(left, right); out may be either input. Returns 0 when OpenSSL fails. */
static int node_hash(EVP_MD_CTX *ctx, const unsigned char *left, const unsigned char *right,
                     unsigned char *out) {
    unsigned char pair[2 * HASH];
    if (!memcmp(left, zero, HASH) && !memcmp(right, zero, HASH)) {
        memset(out, 0, HASH);
        return 1;
    }
    memcpy(pair, left, HASH);
    memcpy(pair + HASH, right, HASH);
    return digest(ctx, pair, sizeof pair, out);
}

/* The parents of `count` sorted nodes of a level whose committed hashes are `child`, written over
 * the first entries of `nodes`. Returns how many, or -1 when OpenSSL fails. */
static Py_ssize_t parents(EVP_MD_CTX *ctx, const unsigned char *child, node_t *nodes, Py_ssize_t count) {
    Py_ssize_t made = 0, j = 0;
    while (j < count) {
        uint32_t i = nodes[j].index, p = i >> 1;
        const unsigned char *left, *right;
        if (i & 1) {
            left = child + (size_t)2 * HASH * p;
            right = nodes[j++].hash;
        } else if (j + 1 < count && nodes[j + 1].index == i + 1) {
            left = nodes[j].hash;
            right = nodes[j + 1].hash;
            j += 2;
        } else {
            left = nodes[j++].hash;
            right = child + (size_t)2 * HASH * p + HASH;
        }
        nodes[made].index = p; /* made < j: the children were read before this is written */
        if (!node_hash(ctx, left, right, nodes[made].hash)) return -1;
        made++;
    }
    return made;
}

static PyObject *pack(const node_t *nodes, Py_ssize_t count) {
    PyObject *packed = PyBytes_FromStringAndSize(NULL, count * ENTRY);
    if (!packed) return NULL;
    unsigned char *at = (unsigned char *)PyBytes_AS_STRING(packed);
    for (Py_ssize_t j = 0; j < count; j++, at += ENTRY) {
        uint32_t i = nodes[j].index;
        at[0] = i & 0xff, at[1] = (i >> 8) & 0xff, at[2] = (i >> 16) & 0xff, at[3] = i >> 24;
        memcpy(at + 4, nodes[j].hash, HASH);
    }
    return packed;
}

static int by_index(const void *a, const void *b) {
    uint32_t x = ((const node_t *)a)->index, y = ((const node_t *)b)->index;
    return (x > y) - (x < y);
}

/* The changed leaves (a dict index -> hash) as sorted nodes; NULL with an exception set. */
static node_t *read_leaves(PyObject *leaves, Py_ssize_t depth, Py_ssize_t *count) {
    Py_ssize_t pos = 0, j = 0;
    PyObject *key, *value;
    node_t *nodes = PyMem_Malloc(sizeof(node_t) * (PyDict_GET_SIZE(leaves) + 1));
    if (!nodes) return (node_t *)PyErr_NoMemory();
    while (PyDict_Next(leaves, &pos, &key, &value)) {
        unsigned long long index = PyLong_Check(key) ? PyLong_AsUnsignedLongLong(key) : (unsigned long long)-1;
        if (PyErr_Occurred() || index >= (1ULL << depth)) {
            PyErr_Clear();
            PyErr_Format(PyExc_ValueError, "a leaf index is an int below 2^%zd", depth);
            PyMem_Free(nodes);
            return NULL;
        }
        if (!PyBytes_Check(value) || PyBytes_GET_SIZE(value) != HASH) {
            PyErr_SetString(PyExc_ValueError, "a leaf hash is 32 bytes");
            PyMem_Free(nodes);
            return NULL;
        }
        nodes[j].index = (uint32_t)index;
        memcpy(nodes[j++].hash, PyBytes_AS_STRING(value), HASH);
    }
    qsort(nodes, j, sizeof(node_t), by_index);
    *count = j;
    return nodes;
}

/* The changed nodes of each level, packed, from the `count` sorted changed leaves in `nodes` (which
 * it overwrites); NULL with an exception set. */
static PyObject *climb(Py_buffer *views, Py_ssize_t depth, EVP_MD_CTX *ctx, node_t *nodes, Py_ssize_t count) {
    PyObject *out = PyList_New(depth + 1);
    if (!out) return NULL;
    for (Py_ssize_t level = depth;; level--) {
        PyObject *packed = pack(nodes, count);
        if (!packed) {
            Py_DECREF(out);
            return NULL;
        }
        PyList_SET_ITEM(out, level, packed);
        if (level == 0) return out;
        Py_BEGIN_ALLOW_THREADS
        count = parents(ctx, views[level].buf, nodes, count);
        Py_END_ALLOW_THREADS
        if (count < 0) {
            PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
            Py_DECREF(out);
            return NULL;
        }
    }
}

static PyObject *above(PyObject *self, PyObject *args) {
    PyObject *levels, *leaves, *out = NULL;
    Py_buffer views[MAX_DEPTH + 1];
    Py_ssize_t count = 0;
    if (!PyArg_ParseTuple(args, "OO!", &levels, &PyDict_Type, &leaves)) return NULL;
    Py_ssize_t depth = open_levels(levels, views);
    if (depth < 0) return NULL;
    node_t *nodes = read_leaves(leaves, depth, &count);
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (nodes && ctx) out = climb(views, depth, ctx, nodes, count);
    else if (nodes) PyErr_NoMemory();
    EVP_MD_CTX_free(ctx);
    PyMem_Free(nodes);
    close_levels(views, depth);
    return out;
}

/* A block's write of one state key: kh || vh sets the key's record, kh alone (put = 0) deletes it. */
typedef struct {
    unsigned char record[2 * HASH];
    int put;
} change_t;

static int by_kh(const void *a, const void *b) { return memcmp(a, b, HASH); }

static uint32_t bucket_of(const unsigned char *kh, Py_ssize_t depth) {
    uint32_t top = (uint32_t)kh[0] << 24 | kh[1] << 16 | kh[2] << 8 | kh[3];
    return depth ? top >> (32 - depth) : 0;
}

/* The writes (a dict of bytes -> bytes or None) as changes sorted by kh, so by bucket; NULL with an
 * exception set. The keys and values are hashed without the GIL, each held by a reference meanwhile. */
static change_t *read_changes(EVP_MD_CTX *ctx, PyObject *writes, Py_ssize_t *count) {
    Py_ssize_t n = PyDict_GET_SIZE(writes), pos = 0, j = 0;
    PyObject *key, *value, **held = PyMem_Malloc(sizeof(PyObject *) * (2 * n + 1));
    change_t *changes = PyMem_Malloc(sizeof(change_t) * (n + 1));
    int ok = held && changes;
    if (!ok) PyErr_NoMemory();
    while (ok && PyDict_Next(writes, &pos, &key, &value)) {
        if (!PyBytes_Check(key) || (value != Py_None && !PyBytes_Check(value))) {
            PyErr_SetString(PyExc_TypeError, "writes map bytes to bytes or None");
            ok = 0;
            break;
        }
        Py_INCREF(key), Py_INCREF(value);
        held[2 * j] = key, held[2 * j + 1] = value;
        changes[j++].put = value != Py_None;
    }
    if (ok) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t i = 0; i < j && ok; i++) {
            PyObject *k = held[2 * i], *v = held[2 * i + 1];
            ok = digest(ctx, PyBytes_AS_STRING(k), PyBytes_GET_SIZE(k), changes[i].record) &&
                 (!changes[i].put || digest(ctx, PyBytes_AS_STRING(v), PyBytes_GET_SIZE(v), changes[i].record + HASH));
        }
        if (ok) qsort(changes, j, sizeof(change_t), by_kh);
        Py_END_ALLOW_THREADS
        if (!ok) PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
    }
    for (Py_ssize_t i = 0; i < 2 * j; i++) Py_DECREF(held[i]);
    PyMem_Free(held);
    if (!ok) {
        PyMem_Free(changes);
        return NULL;
    }
    *count = j;
    return changes;
}

/* The committed blob of a bucket whose leaf is not EMPTY, from read_bucket; NULL with an exception set. */
static PyObject *committed(PyObject *read_bucket, uint32_t bucket) {
    PyObject *blob = PyObject_CallFunction(read_bucket, "I", bucket);
    if (blob == Py_None) {
        Py_DECREF(blob);
        return PyBytes_FromStringAndSize(NULL, 0);
    }
    if (blob && (!PyBytes_Check(blob) || PyBytes_GET_SIZE(blob) % (2 * HASH))) {
        PyErr_Format(PyExc_ValueError, "bucket %u is not 64-byte records", bucket);
        Py_CLEAR(blob);
    }
    return blob;
}

/* The blob of `old` (records sorted by kh) with the sorted `changes` applied; NULL with an exception set. */
static PyObject *merged(PyObject *old, const change_t *changes, Py_ssize_t count) {
    const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(old);
    const unsigned char *end = at + PyBytes_GET_SIZE(old);
    PyObject *blob = PyBytes_FromStringAndSize(NULL, PyBytes_GET_SIZE(old) + count * 2 * HASH);
    if (!blob) return NULL;
    unsigned char *out = (unsigned char *)PyBytes_AS_STRING(blob), *start = out;
    for (Py_ssize_t j = 0; at < end || j < count;) {
        int order = at == end ? 1 : j == count ? -1 : memcmp(at, changes[j].record, HASH);
        if (order < 0) {
            memcpy(out, at, 2 * HASH), out += 2 * HASH, at += 2 * HASH;
            continue;
        }
        if (order == 0) at += 2 * HASH;
        if (changes[j].put) memcpy(out, changes[j].record, 2 * HASH), out += 2 * HASH;
        j++;
    }
    if (_PyBytes_Resize(&blob, out - start) < 0) return NULL;
    return blob;
}

static int leaf_of(EVP_MD_CTX *ctx, PyObject *blob, unsigned char *leaf) {
    if (!PyBytes_GET_SIZE(blob)) {
        memset(leaf, 0, HASH);
        return 1;
    }
    unsigned char tag = 0;
    return EVP_DigestInit_ex2(ctx, sha256, NULL) && EVP_DigestUpdate(ctx, &tag, 1) &&
           EVP_DigestUpdate(ctx, PyBytes_AS_STRING(blob), PyBytes_GET_SIZE(blob)) &&
           EVP_DigestFinal_ex(ctx, leaf, NULL);
}

/* Each changed bucket's new blob into `blobs` and its leaf into `leaves` (in bucket order); returns
 * how many buckets, or -1 with an exception set. */
static Py_ssize_t rebucket(EVP_MD_CTX *ctx, Py_buffer *views, Py_ssize_t depth, PyObject *read_bucket,
                           const change_t *changes, Py_ssize_t count, PyObject *blobs, node_t *leaves) {
    Py_ssize_t made = 0;
    const unsigned char *committed_leaves = views[depth].buf;
    for (Py_ssize_t j = 0, k; j < count; j = k) {
        uint32_t bucket = bucket_of(changes[j].record, depth);
        for (k = j + 1; k < count && bucket_of(changes[k].record, depth) == bucket; k++) {}
        int empty = !memcmp(committed_leaves + (size_t)HASH * bucket, zero, HASH);
        PyObject *old = empty ? PyBytes_FromStringAndSize(NULL, 0) : committed(read_bucket, bucket);
        PyObject *blob = old ? merged(old, changes + j, k - j) : NULL;
        Py_XDECREF(old);
        PyObject *index = blob ? PyLong_FromUnsignedLong(bucket) : NULL;
        int ok = index && PyDict_SetItem(blobs, index, blob) == 0;
        Py_XDECREF(index);
        if (ok && !leaf_of(ctx, blob, leaves[made].hash)) {
            PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
            ok = 0;
        }
        Py_XDECREF(blob);
        if (!ok) return -1;
        leaves[made++].index = bucket;
    }
    return made;
}

static PyObject *update(PyObject *self, PyObject *args) {
    PyObject *levels, *writes, *read_bucket, *blobs = NULL, *nodes = NULL, *out = NULL;
    Py_buffer views[MAX_DEPTH + 1];
    Py_ssize_t count = 0;
    if (!PyArg_ParseTuple(args, "OO!O", &levels, &PyDict_Type, &writes, &read_bucket)) return NULL;
    Py_ssize_t depth = open_levels(levels, views);
    if (depth < 0) return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    change_t *changes = ctx ? read_changes(ctx, writes, &count) : (change_t *)PyErr_NoMemory();
    node_t *leaves = changes ? PyMem_Malloc(sizeof(node_t) * (count + 1)) : NULL;
    if (changes && !leaves) PyErr_NoMemory();
    if (leaves && (blobs = PyDict_New())) {
        Py_ssize_t changed = rebucket(ctx, views, depth, read_bucket, changes, count, blobs, leaves);
        if (changed >= 0 && (nodes = climb(views, depth, ctx, leaves, changed)))
            out = PyTuple_Pack(2, blobs, nodes);
    }
    Py_XDECREF(blobs);
    Py_XDECREF(nodes);
    PyMem_Free(leaves);
    PyMem_Free(changes);
    EVP_MD_CTX_free(ctx);
    close_levels(views, depth);
    return out;
}

static PyObject *put(PyObject *self, PyObject *args) {
    PyObject *levels, *changed;
    Py_buffer views[MAX_DEPTH + 1];
    if (!PyArg_ParseTuple(args, "OO!", &levels, &PyList_Type, &changed)) return NULL;
    Py_ssize_t depth = open_levels(levels, views);
    if (depth < 0) return NULL;
    if (PyList_GET_SIZE(changed) != depth + 1) {
        PyErr_SetString(PyExc_ValueError, "one packed set of nodes per level");
        goto fail;
    }
    for (int writing = 0; writing < 2; writing++) { /* check every entry before writing any */
        for (Py_ssize_t l = 0; l <= depth; l++) {
            PyObject *packed = PyList_GET_ITEM(changed, l);
            if (!PyBytes_Check(packed) || PyBytes_GET_SIZE(packed) % ENTRY) {
                PyErr_SetString(PyExc_ValueError, "packed nodes are bytes of 36-byte entries");
                goto fail;
            }
            const unsigned char *at = (const unsigned char *)PyBytes_AS_STRING(packed);
            const unsigned char *end = at + PyBytes_GET_SIZE(packed);
            for (; at < end; at += ENTRY) {
                uint32_t i = at[0] | at[1] << 8 | at[2] << 16 | (uint32_t)at[3] << 24;
                if ((uint64_t)i >= (1ULL << l)) {
                    PyErr_Format(PyExc_ValueError, "node %u is not of level %zd", i, l);
                    goto fail;
                }
                if (writing) memcpy((unsigned char *)views[l].buf + (size_t)HASH * i, at + 4, HASH);
            }
        }
    }
    close_levels(views, depth);
    Py_RETURN_NONE;
fail:
    close_levels(views, depth);
    return NULL;
}

static PyObject *build(PyObject *self, PyObject *args) {
    PyObject *levels;
    Py_buffer views[MAX_DEPTH + 1];
    int ok = 1;
    if (!PyArg_ParseTuple(args, "O", &levels)) return NULL;
    Py_ssize_t depth = open_levels(levels, views);
    if (depth < 0) return NULL;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    if (ctx) {
        Py_BEGIN_ALLOW_THREADS
        for (Py_ssize_t level = depth - 1; level >= 0 && ok; level--) {
            const unsigned char *child = views[level + 1].buf;
            unsigned char *parent = views[level].buf;
            for (size_t p = 0; p < (size_t)1 << level && ok; p++)
                ok = node_hash(ctx, child + 2 * HASH * p, child + 2 * HASH * p + HASH, parent + HASH * p);
        }
        Py_END_ALLOW_THREADS
    }
    EVP_MD_CTX_free(ctx);
    close_levels(views, depth);
    if (!ctx) return PyErr_NoMemory();
    if (!ok) {
        PyErr_SetString(PyExc_RuntimeError, "SHA-256 failed");
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef methods[] = {
    {"update", update, METH_VARARGS,
     "update(levels, writes, read_bucket) -> (blobs, nodes): the changed buckets' blobs (bucket -> "
     "bytes, b\"\" when emptied) and what above() gives for their leaves, after writes (state key -> "
     "value, None deletes) over the levels and the committed blobs read_bucket(bucket) returns"},
    {"above", above, METH_VARARGS,
     "above(levels, leaves) -> the changed nodes of each level, packed, given the changed leaves "
     "(index -> hash) over the levels; changes nothing"},
    {"put", put, METH_VARARGS, "put(levels, nodes): writes what above() returned into the levels"},
    {"build", build, METH_VARARGS, "build(levels): computes every level above the leaves"},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {PyModuleDef_HEAD_INIT, "_merkle", NULL, -1, methods};

PyMODINIT_FUNC PyInit__merkle(void) {
    sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    if (!sha256) {
        PyErr_SetString(PyExc_ImportError, "OpenSSL has no SHA-256");
        return NULL;
    }
    return PyModule_Create(&module);
}
