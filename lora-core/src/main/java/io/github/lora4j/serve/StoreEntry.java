package io.github.lora4j.serve;

import java.nio.file.Path;

/**
 * One registration of an adapter: its name and directory, what the store knows of its size, where it is (absent,
 * loading, resident, being evicted) and how many open batches pin it. Guarded by the store's lock; a registration
 * replaced under the same name is a new entry, so an old one can finish its batches while the new one waits.
 */
final class StoreEntry {

    /** Where the adapter is. Only {@link #RESIDENT} entries are in the LRU list and may serve a batch. */
    enum State {
        /** Not in the model. */
        ABSENT,
        /** Claimed by one thread that loads it (first waiting for room, then reading the files). */
        LOADING,
        /** In the model, complete. */
        RESIDENT,
        /** Being deleted from the model by one thread. */
        EVICTING
    }

    /** One load of an entry; every batch that asked for the entry while it ran shares its outcome. */
    static final class Attempt {
        boolean done;
        /** Why the load failed, or null. */
        Exception failure;
        /** The failure is not the adapter's (the loading thread was interrupted): a waiting batch loads again. */
        boolean retry;
    }

    final String name;
    final Path dir;
    /** Resident bytes from the last sizing, or -1 while unknown. */
    long size = -1;
    State state = State.ABSENT;
    /** The current or last load. */
    Attempt attempt;
    /** Open or opening batches that need this entry. */
    int pins;
    /** The bytes added to the store's committed total when the first pin was taken; removed with the last. */
    long pinnedBytes;
    /** The bytes reserved when the load began; released when the adapter leaves the model. */
    long reservedBytes;
    /** Unregistered (or the store closed): removed from the model once no batch pins it. */
    boolean retired;

    StoreEntry(String name, Path dir) {
        this.name = name;
        this.dir = dir;
    }

    @Override
    public String toString() {
        return name + "{" + state + ", " + size + " bytes, pins " + pins + (retired ? ", retired" : "") + "}";
    }
}
