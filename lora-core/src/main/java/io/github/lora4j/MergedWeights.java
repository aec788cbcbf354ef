package io.github.lora4j;

import java.lang.ref.WeakReference;
import java.util.ArrayList;
import java.util.List;
import org.nd4j.linalg.api.buffer.DataBuffer;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * The process-wide registry of weight memory that holds a merged adapter: a layer claims its {@code W}'s memory
 * before it merges and gives it back after the unmerge, and a claim over memory another layer has claimed is refused.
 * Without it two loose layers over one {@code W} (or over overlapping views of it) could both merge: the first
 * unmerge then puts back bits that hold the second layer's update, and the second unmerge leaves {@code W} wrong.
 * ({@code LoraModel} refuses tied weights among its modules; this guards every layer, loose ones included.)
 *
 * <p>Memory is compared by {@link SharedMemory}'s rule, the one {@link Checks#checkNoOverlap} and {@code LoraModel}'s
 * tied-weight refusal use: conservative address ranges, so two interleaved views (even and odd columns) count as
 * overlapping; disjoint row blocks of one array do not. Where a backend gives no host address, arrays on the same
 * buffer count as overlapping.
 *
 * <p>A claim holds its owner (the layer's {@link Merge}) and the buffer weakly: a layer that is garbage-collected while
 * merged can never unmerge, so its claim lapses by itself. Thread-safe: claims and releases of all layers are
 * serialised on this class; the merge itself runs after the claim, outside that lock.
 */
final class MergedWeights {

    private static final List<Claim> CLAIMS = new ArrayList<>();

    private MergedWeights() {
    }

    /** Memory a merged layer holds; {@link #release()} gives it back. */
    static final class Claim {
        private final WeakReference<Object> owner;
        /** The claimed bytes; null (and the claim not registered) for an empty W. */
        private final SharedMemory.Span span;
        private final String holder;

        private Claim(Object owner, SharedMemory.Span span, String holder) {
            this.owner = new WeakReference<>(owner);
            this.span = span;
            this.holder = holder;
        }

        private boolean live() {
            DataBuffer b = span.buffer();
            return owner.get() != null && b != null && !b.wasClosed();
        }

        /** Gives the memory back; idempotent. */
        void release() {
            synchronized (MergedWeights.class) {
                CLAIMS.remove(this);
            }
        }
    }

    /**
     * Claims {@code weight}'s memory for a merge by {@code owner}, described as {@code holder} in the refusals of
     * later claims.
     *
     * @throws IllegalStateException if a live claim of another owner overlaps it, naming that claim's holder; nothing
     *                               is claimed then
     */
    static Claim claim(INDArray weight, Object owner, String holder) {
        SharedMemory.Span span = SharedMemory.span(weight);
        if (span == null) {
            return new Claim(owner, null, holder);    // an empty W holds no memory: nothing to claim or clash with
        }
        synchronized (MergedWeights.class) {
            CLAIMS.removeIf(c -> !c.live());
            for (Claim c : CLAIMS) {
                if (c.owner.get() != owner && c.span.overlaps(span)) {
                    throw new IllegalStateException("cannot merge: W shares memory with the W of another layer, "
                            + c.holder + ", whose adapter is merged into it; merging here too would put two updates "
                            + "into one array and unmerging both would corrupt it. Expected W to hold no other "
                            + "layer's merge: unmerge that layer first, or wrap a copy of W (dup()); W is unchanged");
                }
            }
            Claim c = new Claim(owner, span, holder);
            CLAIMS.add(c);
            return c;
        }
    }
}
