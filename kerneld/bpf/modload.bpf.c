// SPDX-License-Identifier: GPL-2.0-or-later
/*
 * kerneld's watch over every module load on the host, through the BPF LSM.
 *
 * Three hooks:
 *  - kernel_read_file (sleepable): finit_module(2) reading a module file.
 *    The file's SHA-256 (bpf_ima_file_hash, the file as stored) keys the
 *    verdicts kerneld computed from its module rules.  The hook runs after
 *    deny_write_access(), so the bytes hashed are the bytes loaded.
 *  - kernel_load_data: init_module(2), which has no file and no name.
 *  - kernel_module_request: the alias the kernel asks for (reported only;
 *    kerneld's own policy answers the request itself).
 * Every one becomes an event in the ring buffer; a refusal is -EPERM.
 *
 * CO-RE: the two structs touched are declared here with
 * preserve_access_index, so one object serves every kernel with BTF.
 * Built by kerneld/build.rs with clang -target bpf -g -O2.
 */
#include <linux/types.h>
#include <linux/bpf.h>

#define SEC(name) __attribute__((section(name), used))
#define __uint(name, val) int (*name)[val]
#define __type(name, val) typeof(val) *name

/* Helpers by number (linux/bpf.h), as libbpf's bpf_helper_defs.h does. */
static void *(*bpf_map_lookup_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_lookup_elem;
static long (*bpf_map_update_elem)(void *map, const void *key, const void *value, __u64 flags) =
	(void *)BPF_FUNC_map_update_elem;
static long (*bpf_map_delete_elem)(void *map, const void *key) = (void *)BPF_FUNC_map_delete_elem;
static __u64 (*bpf_ktime_get_ns)(void) = (void *)BPF_FUNC_ktime_get_ns;
static __u64 (*bpf_get_current_pid_tgid)(void) = (void *)BPF_FUNC_get_current_pid_tgid;
static long (*bpf_get_current_comm)(void *buf, __u32 size) = (void *)BPF_FUNC_get_current_comm;
static __u64 (*bpf_get_current_cgroup_id)(void) = (void *)BPF_FUNC_get_current_cgroup_id;
static long (*bpf_probe_read_kernel_str)(void *dst, __u32 size, const void *src) =
	(void *)BPF_FUNC_probe_read_kernel_str;
static void *(*bpf_ringbuf_reserve)(void *ringbuf, __u64 size, __u64 flags) =
	(void *)BPF_FUNC_ringbuf_reserve;
static void (*bpf_ringbuf_submit)(void *data, __u64 flags) = (void *)BPF_FUNC_ringbuf_submit;
static long (*bpf_d_path)(void *path, char *buf, __u32 sz) = (void *)BPF_FUNC_d_path;
static long (*bpf_ima_file_hash)(void *file, void *dst, __u32 size) =
	(void *)BPF_FUNC_ima_file_hash;

/* CO-RE: only the fields used; libbpf-style relocation by name. */
struct path {
	void *mnt;
	void *dentry;
} __attribute__((preserve_access_index));

struct file {
	struct path f_path;
} __attribute__((preserve_access_index));

enum kernel_read_file_id {
	READING_MODULE = 2,
	READING_MODULE_COMPRESSED = 7,
};

enum kernel_load_data_id {
	LOADING_MODULE = 2,
};

#define EPERM 1

/* Event kinds (the `hook` field). */
#define HOOK_READ_FILE 1
#define HOOK_LOAD_DATA 2
#define HOOK_MODULE_REQUEST 3

/* Why the verdict (the `reason` field). */
#define REASON_NONE 0
#define REASON_ALLOWED 1  /* the file's hash has an allow verdict */
#define REASON_DENIED 2   /* ... a deny verdict */
#define REASON_UNKNOWN 3  /* no verdict for the hash, or no hash */
#define REASON_INIT_MODULE 4
#define REASON_FALLBACK 5 /* init_module right after a refused finit_module */

/* How long after a refused finit_module() the same thread's init_module()
 * counts as its fallback: libkmod (up to kmod 30) and busybox retry any
 * failed finit_module() with init_module() of the decompressed image. */
#define FALLBACK_NS (10ULL * 1000 * 1000 * 1000)
/* Verdicts in the map. */
#define VERDICT_ALLOW 1
#define VERDICT_DENY 2

/* The layout kerneld/src/modload/event.rs reads: keep them in step. */
struct event {
	__u32 hook;
	__u32 id;
	__u32 tgid;
	__u32 pid;
	__u64 cgroup;
	__s32 verdict;   /* what the hook returned: 0 or -EPERM */
	__s32 hash_rc;   /* bpf_ima_file_hash's return: the algorithm, or -errno; 0 not tried */
	__u32 reason;
	__u32 enforcing; /* the mode when it was decided */
	char comm[16];
	__u8 sha256[32];
	char name[256];  /* the file's path, or the alias asked for */
};

struct config {
	__u32 enforce;      /* 0 observe, 1 enforce */
	__u32 refuse_unknown;
	__u32 refuse_init_module;
	__u32 pad;
};

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 1 << 20);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, __u8[32]);
	__type(value, __u32);
} verdicts SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

/* Threads whose finit_module() was refused, with when: their
 * init_module() fallback is the same load, refused too. */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 4096);
	__type(key, __u64);
	__type(value, __u64);
} denied_threads SEC(".maps");

char LICENSE[] SEC("license") = "GPL";

static __always_inline struct config *settings(void)
{
	__u32 zero = 0;
	return bpf_map_lookup_elem(&config, &zero);
}

static __always_inline void who(struct event *e)
{
	__u64 pt = bpf_get_current_pid_tgid();
	e->tgid = pt >> 32;
	e->pid = (__u32)pt;
	e->cgroup = bpf_get_current_cgroup_id();
	bpf_get_current_comm(e->comm, sizeof(e->comm));
}

static __always_inline int is_module_read(int id)
{
	if (id == READING_MODULE)
		return 1;
	/* 7.x reads compressed modules under an id of their own. */
	if (__builtin_preserve_enum_value(*(typeof(enum kernel_read_file_id) *)READING_MODULE_COMPRESSED, 0))
		return id == __builtin_preserve_enum_value(
				     *(typeof(enum kernel_read_file_id) *)READING_MODULE_COMPRESSED, 1);
	return 0;
}

/* LSM programs get the hook's arguments, then the return value of the
 * programs before them, as an array of u64. */
SEC("lsm.s/kernel_read_file")
int kerneld_read_file(unsigned long long *ctx)
{
	struct file *file = (struct file *)ctx[0];
	int id = (int)ctx[1];
	int prev = (int)ctx[3];
	__u8 sha256[32];
	struct config *cfg;
	struct event *e;
	__u32 *verdict;
	int ret = 0;

	if (prev)
		return prev;
	if (!is_module_read(id))
		return 0;
	cfg = settings();
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e) {
		/* No room to report: still decide.  Without a hash the file is
		 * unknown, and unknown is allowed unless configured otherwise. */
		if (cfg && cfg->enforce && cfg->refuse_unknown)
			return -EPERM;
		return 0;
	}
	e->hook = HOOK_READ_FILE;
	e->id = id;
	who(e);
	e->name[0] = 0;
	bpf_d_path(&file->f_path, e->name, sizeof(e->name));
	/* On the stack: kernels before 6.3 take no ring buffer memory as a
	 * map key. */
	__builtin_memset(sha256, 0, sizeof(sha256));
	e->hash_rc = bpf_ima_file_hash(file, sha256, sizeof(sha256));
	__builtin_memcpy(e->sha256, sha256, sizeof(sha256));
	e->reason = REASON_UNKNOWN;
	if (e->hash_rc > 0) {
		verdict = bpf_map_lookup_elem(&verdicts, sha256);
		if (verdict && *verdict == VERDICT_DENY)
			e->reason = REASON_DENIED;
		else if (verdict && *verdict == VERDICT_ALLOW)
			e->reason = REASON_ALLOWED;
	}
	e->enforcing = cfg && cfg->enforce;
	if (e->enforcing) {
		if (e->reason == REASON_DENIED)
			ret = -EPERM;
		else if (e->reason == REASON_UNKNOWN && cfg->refuse_unknown)
			ret = -EPERM;
	}
	e->verdict = ret;
	if (ret) {
		__u64 tid = bpf_get_current_pid_tgid();
		__u64 now = bpf_ktime_get_ns();

		bpf_map_update_elem(&denied_threads, &tid, &now, 0);
	}
	bpf_ringbuf_submit(e, 0);
	return ret;
}

SEC("lsm/kernel_load_data")
int kerneld_load_data(unsigned long long *ctx)
{
	int id = (int)ctx[0];
	int prev = (int)ctx[2];
	struct config *cfg;
	struct event *e;
	__u64 tid, *denied_at;
	int fallback, ret = 0;

	if (prev)
		return prev;
	if (id != LOADING_MODULE)
		return 0;
	cfg = settings();
	tid = bpf_get_current_pid_tgid();
	denied_at = bpf_map_lookup_elem(&denied_threads, &tid);
	fallback = denied_at && bpf_ktime_get_ns() - *denied_at < FALLBACK_NS;
	if (denied_at)
		bpf_map_delete_elem(&denied_threads, &tid);
	if (cfg && cfg->enforce && (cfg->refuse_init_module || fallback))
		ret = -EPERM;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return ret;
	e->hook = HOOK_LOAD_DATA;
	e->id = id;
	who(e);
	e->name[0] = 0;
	__builtin_memset(e->sha256, 0, sizeof(e->sha256));
	e->hash_rc = 0;
	e->reason = fallback ? REASON_FALLBACK : REASON_INIT_MODULE;
	e->enforcing = cfg && cfg->enforce;
	e->verdict = ret;
	bpf_ringbuf_submit(e, 0);
	return ret;
}

SEC("lsm/kernel_module_request")
int kerneld_module_request(unsigned long long *ctx)
{
	const char *alias = (const char *)ctx[0];
	int prev = (int)ctx[1];
	struct event *e;

	if (prev)
		return prev;
	e = bpf_ringbuf_reserve(&events, sizeof(*e), 0);
	if (!e)
		return 0;
	e->hook = HOOK_MODULE_REQUEST;
	e->id = 0;
	who(e);
	bpf_probe_read_kernel_str(e->name, sizeof(e->name), alias);
	__builtin_memset(e->sha256, 0, sizeof(e->sha256));
	e->hash_rc = 0;
	e->reason = REASON_NONE;
	e->enforcing = 0;
	e->verdict = 0;
	bpf_ringbuf_submit(e, 0);
	return 0;
}
