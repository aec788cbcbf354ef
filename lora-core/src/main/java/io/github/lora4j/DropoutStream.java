package io.github.lora4j;

import java.util.Objects;
import java.util.SplittableRandom;

/**
 * The LoRA dropout masks of one adapter, as lora4j draws them in every host that draws its own ({@link LoraLinear},
 * {@link io.github.lora4j.model.LoraModel}, lora-dl4j's layers): inverted dropout
 * {@code dropout(x) = (x ⊙ m) / (1 − p)} on the LoRA path's input, {@code m} Bernoulli(1 − p) per element.
 *
 * <p>The rule, kept in this one place: the stream is a {@link SplittableRandom} seeded with
 * {@code config.seed() ^ 0x5DEECE66D}; element {@code i} of a mask (row-major over the input {@code [n, in]}) is kept
 * when the stream's next {@code nextDouble()} is {@code >= p}. So a layer draws the same masks on every backend and
 * host from the same configuration, one mask per training forward, and no ND4J random op runs.
 *
 * <pre>{@code
 * DropoutStream masks = DropoutStream.of(config.forModule("layer0"));
 * boolean[] kept = masks.next(n * in);          // kept[i]: element i of x [n, in], row-major
 * }</pre>
 *
 * <p>Not thread-safe: one stream serves one layer, which draws from one thread at a time.
 */
public final class DropoutStream {

    /** Mixed into the configuration's seed, so that the mask stream differs from the initialisation stream. */
    private static final long SALT = 0x5DEECE66DL;

    private final SplittableRandom rng;
    private final double p;

    private DropoutStream(long seed, double p) {
        this.rng = new SplittableRandom(seed ^ SALT);
        this.p = p;
    }

    /**
     * The mask stream of an adapter made with {@code config}, at its start.
     *
     * @param config the adapter's configuration: its {@link LoraConfig#seed()} seeds the stream, its
     *               {@link LoraConfig#dropout()} is {@code p}
     * @return a new stream; two streams of equal configurations draw equal masks
     * @throws NullPointerException if {@code config} is null
     */
    public static DropoutStream of(LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        return new DropoutStream(config.seed(), config.dropout());
    }

    /**
     * The next mask.
     *
     * @param count the number of elements of the input ({@code n·in}), at most {@link Integer#MAX_VALUE}
     * @return a new array: {@code true} (kept, {@code m = 1}) with probability {@code 1 − p}, in the input's row-major
     *         order; all true when {@code p = 0} (the stream still advances)
     * @throws ArithmeticException      if {@code count} does not fit an int
     * @throws IllegalArgumentException if {@code count} is negative
     */
    public boolean[] next(long count) {
        if (count < 0) {
            throw new IllegalArgumentException("count must be >= 0, got " + count);
        }
        boolean[] kept = new boolean[Math.toIntExact(count)];
        for (int i = 0; i < kept.length; i++) {
            kept[i] = rng.nextDouble() >= p;
        }
        return kept;
    }

    /**
     * The dropout probability.
     *
     * @return {@code p}, in {@code [0, 1)}
     */
    public double p() {
        return p;
    }

    /**
     * The inverted-dropout factor.
     *
     * @return {@code 1 / (1 − p)}
     */
    public double scale() {
        return 1.0 / (1.0 - p);
    }
}
