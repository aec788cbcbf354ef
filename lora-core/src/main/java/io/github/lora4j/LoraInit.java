package io.github.lora4j;

/**
 * How a new adapter's {@code A} and {@code B} are initialised.
 *
 * <p>Every scheme sets {@code B = 0} (or both to zero), so a freshly added adapter leaves the
 * layer's output unchanged, bit for bit. {@link LoraEmbedding} follows PEFT's embedding convention
 * instead: with either random scheme {@code A = 0} and {@code B ~ N(0, 1)}. Random draws are
 * deterministic from {@link LoraConfig#seed()} and independent of the ND4J backend.
 */
public enum LoraInit {
    /**
     * PEFT's default: {@code A ~ U(-1/sqrt(in), 1/sqrt(in))} (kaiming-uniform with {@code a = sqrt(5)}),
     * {@code B = 0}.
     */
    KAIMING_UNIFORM,
    /** {@code A ~ N(0, (1/r)^2)}, {@code B = 0} (PEFT's {@code init_lora_weights="gaussian"}). */
    GAUSSIAN,
    /** {@code A = 0} and {@code B = 0}: a placeholder whose weights are loaded or set afterwards. */
    ZERO
}
