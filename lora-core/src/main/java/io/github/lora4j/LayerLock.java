package io.github.lora4j;

import java.util.concurrent.locks.Lock;
import java.util.concurrent.locks.ReentrantReadWriteLock;
import java.util.function.Supplier;

/**
 * The layer's threading contract: readers ({@code forward} in eval mode, getters) share the lock; everything that
 * changes state takes it exclusively, after running {@code onExclusive} (which drops derived caches such as the
 * mixed batch's stacked adapters), so a concurrent reader sees a change entirely or not at all.
 */
final class LayerLock {

    private final ReentrantReadWriteLock lock = new ReentrantReadWriteLock();
    private final Runnable onExclusive;

    LayerLock(Runnable onExclusive) {
        this.onExclusive = onExclusive;
    }

    <T> T shared(Supplier<T> f) {
        Lock l = lock.readLock();
        l.lock();
        try {
            return f.get();
        } finally {
            l.unlock();
        }
    }

    void exclusive(Runnable f) {
        exclusiveGet(() -> {
            f.run();
            return null;
        });
    }

    <T> T exclusiveGet(Supplier<T> f) {
        Lock l = lock.writeLock();
        l.lock();
        try {
            onExclusive.run();
            return f.get();
        } finally {
            l.unlock();
        }
    }
}
