package io.github.lora4j;

import java.util.concurrent.atomic.AtomicReference;

/**
 * What backward needs from the last training-mode forward, and the LoRA path's scratch, lent to one call at a time
 * (concurrent inference calls get their own; the one kept for reuse is the last returned). Guarded by the layer's
 * lock; training itself belongs on one thread.
 */
final class TrainingCache {

    /** One forward's record; {@code path} is null when no adapter took part. */
    record Forward(LoraPath path, LoraPath.Scratch scratch, long[] inputShape, long[] outputShape) {
    }

    private final AtomicReference<LoraPath.Scratch> spare = new AtomicReference<>();
    private Forward forward;

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
                    + "then forward(x)); no forward cache is present");
        }
        return forward;
    }

    /** After a forward: records it in training, else gives its scratch (if any) back. */
    void keep(boolean train, LoraPath path, LoraPath.Scratch scratch, long[] inputShape, long[] outputShape) {
        if (train) {
            set(new Forward(path, scratch, inputShape, outputShape));
        } else if (scratch != null) {
            give(scratch);
        }
    }

    /** Records a training forward, giving the previous one's scratch back. */
    void set(Forward f) {
        drop();
        forward = f;
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

    /** Whether the recorded forward ran {@code adapter}'s path. */
    boolean ran(LoraAdapter adapter) {
        return forward != null && forward.path() != null && forward.path().adapter() == adapter;
    }
}
