// SPDX-License-Identifier: GPL-2.0
/*
 * C glue of kerneld_shim, for what the 6.12 Rust kernel crate has no
 * abstraction for:
 *
 * - the settings, as module parameters, in
 *   /sys/module/kerneld_shim/parameters/ (writable by root), and the
 *   counters, in sysfs: /sys/kernel/kerneld_shim/;
 * - the requester's identity, read in C so that no C struct field is read
 *   through a bindgen layout (see kernel/README.md);
 * - a rate-limited warning;
 * - the hand-over of each request to a kernel thread (a workqueue), which
 *   sends it and waits for the answer: LSMs judge the task that waits on a
 *   queue, not its credentials, so the requester waits for that thread,
 *   killably, as it would wait for the usermode helper;
 * - the suspend notifier: no request waits on user space while tasks are
 *   frozen;
 * - the kerneld that serves the key (/sys/kernel/kerneld_shim/server), so
 *   that a request it read is not awaited after it died.
 *
 * The protocol is in kerneld_shim_main.rs.  The numbers of the settings and
 * counters below are the ones of its `Setting` and `Counter`.
 */
#include <linux/atomic.h>
#include <linux/cgroup.h>
#include <linux/completion.h>
#include <linux/cred.h>
#include <linux/kobject.h>
#include <linux/kstrtox.h>
#include <linux/kernfs.h>
#include <linux/module.h>
#include <linux/moduleparam.h>
#include <linux/nsproxy.h>
#include <linux/pid.h>
#include <linux/printk.h>
#include <linux/random.h>
#include <linux/ratelimit.h>
#include <linux/refcount.h>
#include <linux/sched.h>
#include <linux/sched/signal.h>
#include <linux/slab.h>
#include <linux/spinlock.h>
#include <linux/string.h>
#include <linux/suspend.h>
#include <linux/sysfs.h>
#include <linux/uidgid.h>
#include <linux/version.h>
#include <linux/wait.h>
#include <linux/workqueue.h>

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
/*
 * In sysfs, one read-only file each in /sys/kernel/kerneld_shim/: kdstat
 * and its Prometheus output read them on production hosts, where debugfs
 * is often not mounted or is locked down.  Not module parameters: nobody
 * sets a counter.
 */
#define KD_NCOUNTERS 14
static atomic_long_t counters[KD_NCOUNTERS];

struct kd_counter_attr {
	struct kobj_attribute attr;
	unsigned int which;
};

static ssize_t counter_show(struct kobject *kobj, struct kobj_attribute *attr,
			    char *buf)
{
	struct kd_counter_attr *c = container_of(attr, struct kd_counter_attr, attr);

	return sysfs_emit(buf, "%ld\n", atomic_long_read(&counters[c->which]));
}

#define KD_COUNTER(n, _name)						\
	static struct kd_counter_attr kd_attr_##_name = {		\
		.attr = __ATTR(_name, 0444, counter_show, NULL),	\
		.which = n,						\
	}

/* request_module() calls served through kerneld's queue or handed back */
KD_COUNTER(0, requests);
/* answers received from kerneld */
KD_COUNTER(1, answered);
/* answers with a non-zero status (module not loaded) */
KD_COUNTER(2, failed);
/* request_module_nowait() requests sent without waiting (id 0) */
KD_COUNTER(3, nowait);
/* no queue at the key: usermode helper (or failed) */
KD_COUNTER(4, fallback_no_queue);
/* request unread after read_wait_ms, taken back: helper (or failed) */
KD_COUNTER(5, fallback_unread);
/* queue full: usermode helper (or failed) */
KD_COUNTER(6, fallback_full);
/* queue removed while waiting: usermode helper (or failed) */
KD_COUNTER(7, fallback_gone);
/* queue not root's with mode 0600 or stricter: as without kerneld */
KD_COUNTER(8, untrusted_queue);
/* read by kerneld, no answer within reply_wait_ms */
KD_COUNTER(9, timed_out);
/* requester killed while waiting */
KD_COUNTER(10, interrupted);
/* answers that came after their requester stopped waiting, removed */
KD_COUNTER(11, late_answers);
/* sent while a suspend was starting: usermode helper (or failed) */
KD_COUNTER(12, fallback_suspend);
/* read by a kerneld that died before answering: helper (or failed) */
KD_COUNTER(13, fallback_died);

/* --- the serving kerneld ------------------------------------------------- */
/*
 * kerneld writes its own pid to /sys/kernel/kerneld_shim/server (root only)
 * once it holds its key; 0 clears the writer's own registration.  Kept as a
 * struct pid reference, so that a reused pid never names another process.
 * The worker watches it while kerneld serves a request it read.
 */
static DEFINE_SPINLOCK(kd_server_lock);
static struct pid *kd_server;

static ssize_t server_show(struct kobject *kobj, struct kobj_attribute *attr,
			   char *buf)
{
	pid_t nr = 0;

	spin_lock(&kd_server_lock);
	if (kd_server)
		nr = pid_vnr(kd_server);
	spin_unlock(&kd_server_lock);
	return sysfs_emit(buf, "%d\n", nr);
}

static ssize_t server_store(struct kobject *kobj, struct kobj_attribute *attr,
			    const char *buf, size_t count)
{
	struct pid *me = task_tgid(current);
	struct pid *old = NULL;
	int nr, err;

	err = kstrtoint(buf, 10, &nr);
	if (err)
		return err;
	/* Only kerneld itself says it serves, or no longer does. */
	if (nr != 0 && nr != task_tgid_vnr(current))
		return -EPERM;
	spin_lock(&kd_server_lock);
	if (nr) {
		old = kd_server;
		kd_server = get_pid(me);
	} else if (kd_server == me) {
		old = kd_server;
		kd_server = NULL;
	}
	spin_unlock(&kd_server_lock);
	put_pid(old);
	return count;
}

static struct kobj_attribute kd_kerneld_server =
	__ATTR(server, 0600, server_show, server_store);

/* Whether the process behind @pid has died or is dying. */
static bool kd_dead(struct pid *pid)
{
	struct task_struct *task;
	bool dead;

	rcu_read_lock();
	task = pid_task(pid, PIDTYPE_TGID);
	/* SIGKILL and exit_group() mark the group; a plain exit() the leader. */
	dead = !task || (READ_ONCE(task->signal->flags) & SIGNAL_GROUP_EXIT) ||
	       (task->exit_state && thread_group_empty(task));
	rcu_read_unlock();
	return dead;
}

/* A reference to the registered kerneld if it lives, or NULL. */
struct pid *kerneld_shim_server_get(void);
struct pid *kerneld_shim_server_get(void)
{
	struct pid *pid;

	spin_lock(&kd_server_lock);
	pid = get_pid(kd_server);
	spin_unlock(&kd_server_lock);
	if (pid && kd_dead(pid)) {
		put_pid(pid);
		return NULL;
	}
	return pid;
}

bool kerneld_shim_server_alive(struct pid *pid);
bool kerneld_shim_server_alive(struct pid *pid)
{
	return !kd_dead(pid);
}

void kerneld_shim_server_put(struct pid *pid);
void kerneld_shim_server_put(struct pid *pid)
{
	put_pid(pid);
}

static struct attribute *kd_counter_attrs[] = {
	&kd_attr_requests.attr.attr,
	&kd_attr_answered.attr.attr,
	&kd_attr_failed.attr.attr,
	&kd_attr_nowait.attr.attr,
	&kd_attr_fallback_no_queue.attr.attr,
	&kd_attr_fallback_unread.attr.attr,
	&kd_attr_fallback_full.attr.attr,
	&kd_attr_fallback_gone.attr.attr,
	&kd_attr_untrusted_queue.attr.attr,
	&kd_attr_timed_out.attr.attr,
	&kd_attr_interrupted.attr.attr,
	&kd_attr_late_answers.attr.attr,
	&kd_attr_fallback_suspend.attr.attr,
	&kd_attr_fallback_died.attr.attr,
	&kd_kerneld_server.attr,
	NULL,
};
static_assert(ARRAY_SIZE(kd_counter_attrs) == KD_NCOUNTERS + 2);

static const struct attribute_group kd_counter_group = {
	.attrs = kd_counter_attrs,
};

static struct kobject *kd_kobj;

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
#if LINUX_VERSION_CODE < KERNEL_VERSION(6, 13, 0)
	__get_task_comm(comm, comm_size, current);
#else
	/* What get_task_comm() does since 6.13, for a buffer by pointer. */
	strscpy_pad(comm, current->comm, comm_size);
#endif
	cgroup[0] = '\0';
#ifdef CONFIG_CGROUPS
	if (current->nsproxy && cgroup_size > 1) {
		struct cgroup_namespace *ns = current->nsproxy->cgroup_ns;
		struct cgroup *cgrp;
		int len;

		/*
		 * What cgroup_path_ns() prints, without its global
		 * cgroup_mutex: the requester's cgroup stays allocated under
		 * RCU, and on the default hierarchy the namespace's root is
		 * its root css_set's dfl_cgrp (the namespace pins that
		 * css_set), which needs no lock either.
		 * kernfs_path_from_node() takes a spinlock only.
		 */
		rcu_read_lock();
		cgrp = task_dfl_cgroup(current);
		len = kernfs_path_from_node(cgrp->kn,
					    ns->root_cset->dfl_cgrp->kn,
					    cgroup, cgroup_size);
		rcu_read_unlock();
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

/* --- reply ids ------------------------------------------------------------ */
/* A random start, so that ids do not repeat those of an earlier load. */
u32 kerneld_shim_random(void);
u32 kerneld_shim_random(void)
{
	return get_random_u32();
}

/* --- suspend ---------------------------------------------------------------- */
/*
 * A requester waits for kerneld without being freezable (it may hold the
 * caller's locks, as when it waits for the usermode helper).  So before a
 * suspend freezes tasks, no request may be waiting: from the notifier on,
 * new requests take the usermode helper's path (which suspend knows how
 * to stop), and the notifier waits for those in flight, as long as
 * suspend waits for running helpers; kerneld, not frozen yet, answers.
 */
#define KD_DRAIN_TIMEOUT (5 * HZ)
static atomic_t kd_waiting = ATOMIC_INIT(0);
static bool kd_suspending;
static DECLARE_WAIT_QUEUE_HEAD(kd_drained);

static void kd_done_waiting(void)
{
	if (atomic_dec_and_test(&kd_waiting))
		wake_up(&kd_drained);
}

static int kd_pm_notify(struct notifier_block *nb, unsigned long action,
			void *data)
{
	switch (action) {
	case PM_SUSPEND_PREPARE:
	case PM_HIBERNATION_PREPARE:
	case PM_RESTORE_PREPARE:
		WRITE_ONCE(kd_suspending, true);
		smp_mb();
		if (!wait_event_timeout(kd_drained, !atomic_read(&kd_waiting),
					KD_DRAIN_TIMEOUT)) {
			/* The chain does not call us back for a veto. */
			WRITE_ONCE(kd_suspending, false);
			pr_warn("kerneld_shim: %d request(s) still waiting for kerneld after %d s: suspend refused\n",
				atomic_read(&kd_waiting), KD_DRAIN_TIMEOUT / HZ);
			return notifier_from_errno(-EBUSY);
		}
		break;
	case PM_POST_SUSPEND:
	case PM_POST_HIBERNATION:
	case PM_POST_RESTORE:
		WRITE_ONCE(kd_suspending, false);
		break;
	}
	return NOTIFY_DONE;
}

static struct notifier_block kd_pm_nb = {
	.notifier_call = kd_pm_notify,
};

/* --- the hand-over to a kernel thread --------------------------------------- */
/* In kerneld_shim_main.rs: one exchange with kerneld, in the worker. */
int kerneld_shim_exchange(const char *name, const u8 *body, size_t len,
			  long id, bool wait);

/* kerneld_shim_exchange()'s "not served: run the usermode helper". */
#define KD_NOT_SERVED INT_MIN

struct kd_req {
	struct work_struct work;
	struct completion done;
	refcount_t ref;		/* the requester's and the worker's */
	int ret;
	bool wait;
	long id;
	size_t len;
	char name[MODULE_NAME_LEN];
	u8 body[];
};

static struct workqueue_struct *kd_wq;

static void kd_req_put(struct kd_req *r)
{
	if (refcount_dec_and_test(&r->ref))
		kfree(r);
}

static void kd_work(struct work_struct *work)
{
	struct kd_req *r = container_of(work, struct kd_req, work);

	/* A kernel thread under kernel credentials: what LSMs judge. */
	r->ret = kerneld_shim_exchange(r->name, r->body, r->len, r->id, r->wait);
	complete(&r->done);
	kd_req_put(r);
}

/*
 * Hand a request over to the worker and wait for its outcome, killably.
 * Returns true with *ret set when served, false to let the usermode
 * helper run.  A requester killed meanwhile returns -EINTR; the worker
 * still takes kerneld's answer, so none is left in the queue.
 */
bool kerneld_shim_offload(const char *name, const u8 *body, size_t len,
			  long id, bool wait, int *ret);
bool kerneld_shim_offload(const char *name, const u8 *body, size_t len,
			  long id, bool wait, int *ret)
{
	struct kd_req *r;
	int res;

	if (READ_ONCE(kd_suspending))
		goto suspending;
	atomic_inc(&kd_waiting);
	smp_mb__after_atomic();
	if (READ_ONCE(kd_suspending)) {
		kd_done_waiting();
		goto suspending;
	}
	r = kmalloc(struct_size(r, body, len), GFP_KERNEL);
	if (!r) {
		kd_done_waiting();
		return false;
	}
	INIT_WORK(&r->work, kd_work);
	init_completion(&r->done);
	refcount_set(&r->ref, 2);
	r->ret = KD_NOT_SERVED;
	r->wait = wait;
	r->id = id;
	r->len = len;
	strscpy(r->name, name, sizeof(r->name));
	memcpy(r->body, body, len);
	queue_work(kd_wq, &r->work);
	if (wait_for_completion_killable(&r->done)) {
		kd_req_put(r);
		kd_done_waiting();
		atomic_long_inc(&counters[10]);
		*ret = -EINTR;
		return true;
	}
	res = r->ret;
	kd_req_put(r);
	kd_done_waiting();
	if (res == KD_NOT_SERVED)
		return false;
	*ret = res;
	return true;

suspending:
	atomic_long_inc(&counters[12]);
	if (READ_ONCE(fallback))
		return false;
	*ret = 1 << 8;	/* as modprobe exiting 1 */
	return true;
}

int kerneld_shim_start(void);
int kerneld_shim_start(void)
{
	int err;

	kd_kobj = kobject_create_and_add("kerneld_shim", kernel_kobj);
	if (!kd_kobj)
		return -ENOMEM;
	err = sysfs_create_group(kd_kobj, &kd_counter_group);
	if (err)
		goto put_kobj;
	/* Unbound: each request may sleep up to reply_wait_ms. */
	kd_wq = alloc_workqueue("kerneld_shim", WQ_UNBOUND, 0);
	if (!kd_wq) {
		err = -ENOMEM;
		goto put_kobj;
	}
	err = register_pm_notifier(&kd_pm_nb);
	if (err)
		goto destroy_wq;
	return 0;

destroy_wq:
	destroy_workqueue(kd_wq);
put_kobj:
	/* Removes the group's files too. */
	kobject_put(kd_kobj);
	return err;
}

/* After the handler is unregistered: waits for the workers still running. */
void kerneld_shim_stop(void);
void kerneld_shim_stop(void)
{
	unregister_pm_notifier(&kd_pm_nb);
	destroy_workqueue(kd_wq);
	kobject_put(kd_kobj);
	/* The files are gone: nobody registers any more. */
	put_pid(kd_server);
	kd_server = NULL;
}
