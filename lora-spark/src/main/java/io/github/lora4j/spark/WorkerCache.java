package io.github.lora4j.spark;

import java.util.ArrayDeque;
import java.util.Deque;
import java.util.Iterator;
import java.util.LinkedHashMap;
import java.util.Map;
import java.util.concurrent.atomic.AtomicLong;

/**
 * The networks of one executor JVM, built lazily from a broadcast {@link NetworkPayload} and kept across steps: a
 * task borrows one, sets the step's adapter into it and gives it back, so a network is built once per concurrent
 * task slot and fit, never per step. DL4J networks are not thread-safe, hence a pool per payload rather than one
 * network.
 *
 * <p>Pools of the {@value #KEEP} most recently used payloads are kept; older ones are dropped when a new one
 * arrives (an executor outlives fits). In local mode the driver also evicts its fit's pool when the fit ends.
 */
final class WorkerCache {

    /** A worker's network and, for training, the layout of its adapter. */
    record Entry(NetworkAccess net, AdapterLayout layout) {
    }

    /** Payloads whose networks are kept. */
    static final int KEEP = 2;

    private static final Map<String, Deque<Entry>> POOLS = new LinkedHashMap<>(8, 0.75f, true);
    private static final AtomicLong BUILDS = new AtomicLong();

    private WorkerCache() {
    }

    /**
     * A network of {@code payload} for this task's exclusive use until {@link #release}.
     *
     * @param payload  the broadcast network
     * @param training whether the task trains (then the entry carries the adapter layout)
     * @return a pooled entry, or a newly built one
     */
    static Entry borrow(NetworkPayload payload, boolean training) {
        synchronized (POOLS) {
            Deque<Entry> pool = POOLS.get(payload.id());
            if (pool != null && !pool.isEmpty()) {
                return pool.pop();
            }
        }
        NetworkAccess net = payload.build();
        BUILDS.incrementAndGet();
        return new Entry(net, training ? AdapterLayout.of(net) : null);
    }

    /** Gives {@code entry} back to the pool of payload {@code id}; dropped if that pool was evicted meanwhile. */
    static void release(String id, Entry entry) {
        synchronized (POOLS) {
            Deque<Entry> pool = POOLS.get(id);
            if (pool == null) {
                pool = new ArrayDeque<>();
                POOLS.put(id, pool);
                Iterator<String> eldest = POOLS.keySet().iterator();
                while (POOLS.size() > KEEP) {
                    eldest.next();
                    eldest.remove();
                }
            }
            pool.push(entry);
        }
    }

    /** Drops the networks of payload {@code id} in this JVM. */
    static void evict(String id) {
        synchronized (POOLS) {
            POOLS.remove(id);
        }
    }

    /** Networks built in this JVM so far (tests: a fit builds one per task slot, not one per step). */
    static long builds() {
        return BUILDS.get();
    }
}
