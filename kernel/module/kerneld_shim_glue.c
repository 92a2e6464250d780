// SPDX-License-Identifier: GPL-2.0
/*
 * C glue of kerneld_shim, for what the 6.12 Rust kernel crate has no
 * abstraction for:
 *
 * - the settings and counters, as module parameters, in
 *   /sys/module/kerneld_shim/parameters/ (settings writable by root);
 * - the requester's identity, read in C so that no C struct field is read
 *   through a bindgen layout (see kernel/README.md);
 * - a rate-limited warning.
 *
 * The protocol is in kerneld_shim_main.rs.  The numbers of the settings and
 * counters below are the ones of its `Setting` and `Counter`.
 */
#include <linux/atomic.h>
#include <linux/cgroup.h>
#include <linux/cred.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/nsproxy.h>
#include <linux/printk.h>
#include <linux/ratelimit.h>
#include <linux/sched.h>
#include <linux/string.h>
#include <linux/sysfs.h>
#include <linux/uidgid.h>

/* --- settings ----------------------------------------------------------- */
static int key = 0x6b65726e;
module_param(key, int, 0644);
MODULE_PARM_DESC(key, "IPC key of kerneld's queue (default 0x6b65726e, \"kern\")");

static unsigned int read_wait_ms = 1000;
module_param(read_wait_ms, uint, 0644);
MODULE_PARM_DESC(read_wait_ms, "How long a request may stay unread before it is taken back and the usermode helper runs (ms, default 1000)");

static unsigned int reply_wait_ms = 60000;
module_param(reply_wait_ms, uint, 0644);
MODULE_PARM_DESC(reply_wait_ms, "How long to wait for the answer in all, once kerneld has read the request (ms, default 60000)");

static bool fallback = true;
module_param(fallback, bool, 0644);
MODULE_PARM_DESC(fallback, "Without kerneld (no queue, request unread, queue full or removed), run the usermode helper (Y, default) or fail the request (N)");

long kerneld_shim_setting(unsigned int which);
long kerneld_shim_setting(unsigned int which)
{
	switch (which) {
	case 0:
		return READ_ONCE(key);
	case 1:
		return READ_ONCE(read_wait_ms);
	case 2:
		return READ_ONCE(reply_wait_ms);
	case 3:
		return READ_ONCE(fallback);
	}
	return 0;
}

/* --- counters ----------------------------------------------------------- */
#define KD_NCOUNTERS 12
static atomic_long_t counters[KD_NCOUNTERS];

static int counter_get(char *buf, const struct kernel_param *kp)
{
	return sysfs_emit(buf, "%ld\n", atomic_long_read((atomic_long_t *)kp->arg));
}

static int counter_set(const char *val, const struct kernel_param *kp)
{
	return -EPERM;
}

static const struct kernel_param_ops counter_ops = {
	.get = counter_get,
	.set = counter_set,
};

#define KD_COUNTER(n, name, desc)					\
	module_param_cb(name, &counter_ops, &counters[n], 0444);	\
	MODULE_PARM_DESC(name, desc)

KD_COUNTER(0, requests, "request_module() calls served through kerneld's queue or handed back");
KD_COUNTER(1, answered, "answers received from kerneld");
KD_COUNTER(2, failed, "answers with a non-zero status (module not loaded)");
KD_COUNTER(3, nowait, "request_module_nowait() requests sent without waiting (id 0)");
KD_COUNTER(4, fallback_no_queue, "no queue at the key: usermode helper (or failed)");
KD_COUNTER(5, fallback_unread, "request unread after read_wait_ms, taken back: usermode helper (or failed)");
KD_COUNTER(6, fallback_full, "queue full: usermode helper (or failed)");
KD_COUNTER(7, fallback_gone, "queue removed while waiting: usermode helper (or failed)");
KD_COUNTER(8, untrusted_queue, "queue not root's with mode 0600 or stricter: as without kerneld (helper, or fails with fallback=N)");
KD_COUNTER(9, timed_out, "read by kerneld, no answer within reply_wait_ms");
KD_COUNTER(10, interrupted, "requester killed while waiting");
KD_COUNTER(11, late_answers, "answers that came after their requester stopped waiting, removed");

void kerneld_shim_count(unsigned int which);
void kerneld_shim_count(unsigned int which)
{
	if (which < KD_NCOUNTERS)
		atomic_long_inc(&counters[which]);
}

/* --- the requester ------------------------------------------------------ */
/*
 * ids[0] = tgid (initial pid namespace), ids[1] = uid, ids[2] = gid (initial
 * user namespace); comm (NUL-terminated, comm_size >= TASK_COMM_LEN); the
 * cgroup v2 path as the requester's cgroup namespace shows it, or "" if
 * unknown or longer than cgroup_size - 1.
 */
void kerneld_shim_whoami(u32 *ids, char *comm, size_t comm_size, char *cgroup,
			 size_t cgroup_size);
void kerneld_shim_whoami(u32 *ids, char *comm, size_t comm_size, char *cgroup,
			 size_t cgroup_size)
{
	const struct cred *cred = current_cred();

	ids[0] = task_tgid_nr(current);
	ids[1] = from_kuid_munged(&init_user_ns, cred->uid);
	ids[2] = from_kgid_munged(&init_user_ns, cred->gid);
	__get_task_comm(comm, comm_size, current);
	cgroup[0] = '\0';
#ifdef CONFIG_CGROUPS
	if (current->nsproxy && cgroup_size > 1) {
		struct cgroup *cgrp;
		int len;

		rcu_read_lock();
		cgrp = task_dfl_cgroup(current);
		cgroup_get(cgrp);
		rcu_read_unlock();
		len = cgroup_path_ns(cgrp, cgroup, cgroup_size,
				     current->nsproxy->cgroup_ns);
		cgroup_put(cgrp);
		if (len < 0 || len >= cgroup_size)
			cgroup[0] = '\0';
	}
#endif
}

/* --- warnings ----------------------------------------------------------- */
void kerneld_shim_warn(const char *what, const char *name, long err);
void kerneld_shim_warn(const char *what, const char *name, long err)
{
	static DEFINE_RATELIMIT_STATE(rs, 5 * HZ, 5);

	if (__ratelimit(&rs))
		pr_warn("kerneld_shim: %s: %s (%ld)\n", name, what, err);
}
