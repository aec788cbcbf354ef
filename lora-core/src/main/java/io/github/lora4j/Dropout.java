package io.github.lora4j;

/**
 * Inverted dropout on the LoRA path's input: {@code dropout(x) = (x ⊙ m) / (1 − p)} with {@code m} a Bernoulli(1 − p)
 * mask. The mask is drawn in Java from the adapter's own seeded stream ({@link DropoutStream}, the rule every host
 * shares), so the same seed gives the same masks on every backend and route, and no ND4J random op runs on the hot
 * path; the factor {@code 1 / (1 − p)} is folded into gemm's alpha by {@link LoraPath}.
 */
final class Dropout {

    private Dropout() {
    }

    /** A fresh mask of {@code count} elements: {@code true} (kept, {@code m = 1}) with probability {@code 1 − p}. */
    static boolean[] draw(LoraAdapter adapter, long count, double p) {
        assert p == adapter.dropoutStream().p() : "the adapter's dropout is its config's";
        return adapter.dropoutStream().next(count);
    }

    /** The inverted-dropout factor {@code 1 / (1 − p)}. */
    static double scale(double p) {
        return 1.0 / (1.0 - p);
    }
}
