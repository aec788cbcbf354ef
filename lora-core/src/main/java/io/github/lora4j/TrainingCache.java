package io.github.lora4j;

import java.util.Collection;
import java.util.Collections;
import java.util.IdentityHashMap;
import java.util.Set;
import java.util.concurrent.atomic.AtomicReference;

/**
 * What backward needs from the last training-mode forward, and the LoRA path's scratch, lent to one call at a time
 * (concurrent inference calls get their own; the one kept for reuse is the last returned); and which adapters a
 * backward has given gradients since they were last cleared. Guarded by the layer's lock; training itself belongs on
 * one thread.
 */
final class TrainingCache {

    /**
     * One forward's record: {@code path} (null when no adapter took part) for a single-adapter forward, or
     * {@code mixed} for a mixed-adapter batch (then {@code path} and {@code scratch} are null).
     */
    record Forward(LoraPath path, LoraPath.Scratch scratch, long[] inputShape, long[] outputShape,
                   MixedBatch.Trained mixed) {
    }

    private final AtomicReference<LoraPath.Scratch> spare = new AtomicReference<>();
    private Forward forward;
    /** Why the last recorded forward was dropped, when a change to an adapter it ran did it; else null. */
    private String dropReason;
    /** Adapters whose gradient buffers a backward added to since they were last cleared. */
    private final Set<LoraAdapter> withGradients = Collections.newSetFromMap(new IdentityHashMap<>());
    /** Whether a backward ran since the gradients were last cleared (it may have reached no adapter: base rows only). */
    private boolean backwardRan;

    /** A scratch for one call: the spare one, or a new one while another call holds it. */
    LoraPath.Scratch take() {
        LoraPath.Scratch s = spare.getAndSet(null);
        return s != null ? s : new LoraPath.Scratch();
    }

    /** Gives a scratch back after a call that keeps nothing. */
    void give(LoraPath.Scratch scratch) {
        spare.set(scratch);
    }

    /** The recorded forward, or a refusal when there is none. */
    Forward require() {
        if (forward == null) {
            throw new IllegalStateException("backward needs a forward in training mode first (call train(), "
                    + "then forward(x)); no forward cache is present"
                    + (dropReason == null ? "" : ": the last one was dropped because " + dropReason));
        }
        return forward;
    }

    /** After a forward: records it in training, else gives its scratch (if any) back. */
    void keep(boolean train, LoraPath path, LoraPath.Scratch scratch, long[] inputShape, long[] outputShape) {
        if (train) {
            set(new Forward(path, scratch, inputShape, outputShape, null));
        } else if (scratch != null) {
            give(scratch);
        }
    }

    /** Records a training forward, giving the previous one's scratch back. */
    void set(Forward f) {
        drop();
        forward = f;
        dropReason = null;
    }

    /** Forgets the training forward (backward is then refused) and gives its scratch back. */
    void drop() {
        Forward f = forward;
        forward = null;
        if (f != null && f.scratch() != null) {
            spare.set(f.scratch());
        }
    }

    /** {@link #drop()} when {@code condition} holds. */
    void dropIf(boolean condition) {
        if (condition) {
            drop();
        }
    }

    /** {@link #drop()} when {@code condition} holds, remembering {@code reason} for the refused backward. */
    void dropIf(boolean condition, String reason) {
        if (condition && forward != null) {
            drop();
            dropReason = reason;
        }
    }

    /** Records the training forward of a mixed-adapter batch. */
    void keepMixed(MixedBatch.Trained mixed, long[] inputShape, long[] outputShape) {
        set(new Forward(null, null, inputShape, outputShape, mixed));
    }

    /** Whether the recorded forward ran {@code adapter}'s path. */
    boolean ran(LoraAdapter adapter) {
        return forward != null && (forward.path() != null && forward.path().adapter() == adapter
                || forward.mixed() != null && forward.mixed().ran(adapter));
    }

    /** Notes that a backward added to the gradients of {@code adapters}. */
    void gradientsAdded(Collection<LoraAdapter> adapters) {
        withGradients.addAll(adapters);
        backwardRan = true;
    }

    /** Whether a backward added to {@code adapter}'s gradients since they were last cleared. */
    boolean hasGradients(LoraAdapter adapter) {
        return withGradients.contains(adapter);
    }

    /** Whether a backward ran since the gradients were last cleared, whether or not it reached an adapter. */
    boolean backwardRan() {
        return backwardRan;
    }

    /** Forgets that {@code adapter} has gradients (they were cleared, or it was deleted). */
    void gradientsCleared(LoraAdapter adapter) {
        withGradients.remove(adapter);
        backwardRan = !withGradients.isEmpty();
    }

    /** Forgets every adapter's gradients (all were cleared). */
    void allGradientsCleared() {
        withGradients.clear();
        backwardRan = false;
    }
}
