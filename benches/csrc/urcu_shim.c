/*
 * liburcu (memb flavor) for the usrcu benches.
 *
 * _LGPL_SOURCE makes urcu_memb_read_lock/unlock the inline read side that
 * liburcu users get: a TLS load and store plus a compiler barrier each way.
 * Every read-side loop runs inside C so that the FFI call is paid once per
 * loop, not once per section.
 */
#define _LGPL_SOURCE
#include <stdint.h>
#include <stdlib.h>
#include <urcu/urcu-memb.h>

/* liburcu's memb flavor tracks readers per registered thread. */
void ub_urcu_register(void) { urcu_memb_register_thread(); }
void ub_urcu_unregister(void) { urcu_memb_unregister_thread(); }

/* n read sections: lock + unlock. */
void ub_urcu_read_loop(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		urcu_memb_read_lock();
		urcu_memb_read_unlock();
	}
}

/* n outer sections, each holding one nested section. */
void ub_urcu_read_nested_loop(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		urcu_memb_read_lock();
		urcu_memb_read_lock();
		urcu_memb_read_unlock();
		urcu_memb_read_unlock();
	}
}

/* Read sections back to back until *stop becomes non-zero; returns the count. */
uint64_t ub_urcu_read_until(const volatile int *stop)
{
	uint64_t n = 0;
	while (!__atomic_load_n(stop, __ATOMIC_RELAXED)) {
		for (int i = 0; i < 1024; i++) {
			urcu_memb_read_lock();
			urcu_memb_read_unlock();
		}
		n += 1024;
	}
	return n;
}

void ub_urcu_synchronize(void) { urcu_memb_synchronize_rcu(); }

/* call_rcu: one malloc'ed node per callback, freed by the callback. */
struct ub_node {
	struct rcu_head head;
	uint64_t payload;
};

static uint64_t ub_invoked;

static void ub_free_node(struct rcu_head *h)
{
	free(caa_container_of(h, struct ub_node, head));
	__atomic_fetch_add(&ub_invoked, 1, __ATOMIC_RELAXED);
}

/* Queue n callbacks from the calling (registered) thread. */
void ub_urcu_call_rcu_n(uint64_t n)
{
	for (uint64_t i = 0; i < n; i++) {
		struct ub_node *node = malloc(sizeof(*node));
		if (!node)
			abort();
		node->payload = i;
		urcu_memb_call_rcu(&node->head, ub_free_node);
	}
}

void ub_urcu_barrier(void) { urcu_memb_barrier(); }

uint64_t ub_urcu_invoked(void) { return __atomic_load_n(&ub_invoked, __ATOMIC_RELAXED); }
