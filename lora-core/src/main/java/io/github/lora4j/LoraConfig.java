package io.github.lora4j;

import java.util.Objects;
import org.nd4j.linalg.api.buffer.DataType;
import org.nd4j.linalg.api.ndarray.INDArray;

/**
 * Immutable configuration of one LoRA adapter; validated when built.
 *
 * <p>Defaults match PEFT: {@code rank = 8}, {@code alpha = 8}, {@code dropout = 0},
 * {@code rsLora = false}, {@code useDora = false}, {@code init = KAIMING_UNIFORM}; the seed defaults to
 * {@value #DEFAULT_SEED}.
 *
 * <pre>{@code
 * LoraConfig cfg = LoraConfig.builder().rank(16).alpha(32).dropout(0.05).build();
 * double s = cfg.scaling();   // 32 / 16 = 2.0
 * }</pre>
 */
public final class LoraConfig {

    /** Default rank {@code r}, as in PEFT. */
    public static final int DEFAULT_RANK = 8;
    /** Default {@code lora_alpha}, as in PEFT. */
    public static final double DEFAULT_ALPHA = 8.0;
    /** Default seed of the initialisation and dropout random streams. */
    public static final long DEFAULT_SEED = 42L;

    private static final LoraConfig DEFAULTS = builder().build();

    private final int rank;
    private final double alpha;
    private final double dropout;
    private final boolean rsLora;
    private final boolean useDora;
    private final LoraInit init;
    private final long seed;

    private LoraConfig(Builder b) {
        this.rank = b.rank;
        this.alpha = b.alpha;
        this.dropout = b.dropout;
        this.rsLora = b.rsLora;
        this.useDora = b.useDora;
        this.init = b.init;
        this.seed = b.seed;
    }

    /**
     * A builder holding the defaults.
     *
     * @return a new builder with rank {@value #DEFAULT_RANK}, alpha {@value #DEFAULT_ALPHA}, no dropout, no rsLoRA,
     *         {@link LoraInit#KAIMING_UNIFORM} and seed {@value #DEFAULT_SEED}
     */
    public static Builder builder() {
        return new Builder();
    }

    /**
     * The configuration with every default: {@code r = 8, alpha = 8}, no dropout, kaiming-uniform init.
     *
     * @return the shared default configuration (immutable, so sharing is safe); equal to {@code builder().build()}
     */
    public static LoraConfig defaults() {
        return DEFAULTS;
    }

    /**
     * A builder pre-filled with this configuration's values, to derive a variant.
     *
     * @return a new builder; changing it does not change this configuration
     */
    public Builder toBuilder() {
        return new Builder().rank(rank).alpha(alpha).dropout(dropout).rsLora(rsLora).useDora(useDora).init(init)
                .seed(seed);
    }

    /**
     * Rank {@code r} of the update {@code B·A}: {@code A} is {@code [r, in]}, {@code B} is {@code [out, r]}; at least 1.
     *
     * @return the rank, {@code >= 1}
     */
    public int rank() {
        return rank;
    }

    /**
     * PEFT's {@code lora_alpha}: the numerator of the scaling; finite and positive.
     *
     * @return the alpha, finite and {@code > 0}
     */
    public double alpha() {
        return alpha;
    }

    /**
     * Probability of zeroing an input element on the LoRA path in training mode; in {@code [0, 1)}.
     *
     * @return the dropout probability, in {@code [0, 1)}
     */
    public double dropout() {
        return dropout;
    }

    /**
     * Whether the scaling is {@code alpha / sqrt(r)} (rank-stabilised LoRA) instead of {@code alpha / r}.
     *
     * @return {@code true} for {@code alpha / sqrt(r)}, {@code false} for {@code alpha / r}
     */
    public boolean rsLora() {
        return rsLora;
    }

    /**
     * Whether the adapter is DoRA (PEFT's {@code use_dora}): a trainable magnitude {@code m [out]} rescales each output
     * row of {@code W + s·B·A} to {@code m / ‖W + s·B·A‖_row}; see {@link LoraLinear} and docs/dora.md.
     *
     * @return {@code true} for DoRA, {@code false} for plain LoRA
     */
    public boolean useDora() {
        return useDora;
    }

    /**
     * Initialisation scheme of {@code A} and {@code B}.
     *
     * @return the scheme, never {@code null}
     */
    public LoraInit init() {
        return init;
    }

    /**
     * Seed of the initialisation draw and of the dropout masks.
     *
     * <p><b>One seed, one stream.</b> A layer wrapped with this configuration draws {@code A} and its dropout masks
     * from exactly this seed, so two layers wrapped one at a time with the same configuration start from identical
     * {@code A} and drop the same elements. Give each its own stream with {@link #forModule(String)}, the rule that
     * {@code LoraModel}, {@code LoraSameDiff} and lora-dl4j apply to every module they adapt.
     *
     * @return the seed
     */
    public long seed() {
        return seed;
    }

    /**
     * This configuration for the module at {@code modulePath}: a copy, equal in every field but the seed, which is
     * {@code seed()} mixed with the path by the documented rule
     * {@code z = seed + 0x9E3779B97F4A7C15·(modulePath.hashCode() + 1)}, then SplitMix64's finaliser on {@code z}
     * ({@code String.hashCode} is specified by the JLS, so the result is the same on every JVM). {@code LoraModel},
     * {@code LoraSameDiff} and lora-dl4j give each module {@code config.forModule(path)}, so a layer wrapped by hand
     * with {@code LoraLinear.wrap(w, b, config.forModule(path))} starts exactly where that module does, and
     * equal-shaped modules start from different {@code A} and dropout masks (PEFT's global random stream gives
     * the same effect).
     *
     * @param modulePath the module's path, e.g. {@code model.layers.0.self_attn.q_proj}; any string, not null
     * @return a new configuration with the mixed seed; this one is not changed
     * @throws NullPointerException if {@code modulePath} is null
     */
    public LoraConfig forModule(String modulePath) {
        Objects.requireNonNull(modulePath, "modulePath must not be null");
        long z = seed + 0x9E3779B97F4A7C15L * (modulePath.hashCode() + 1L);
        z = (z ^ (z >>> 30)) * 0xBF58476D1CE4E5B9L;
        z = (z ^ (z >>> 27)) * 0x94D049BB133111EBL;
        return toBuilder().seed(z ^ (z >>> 31)).build();
    }

    /**
     * The factor {@code s} in {@code h = W x + b + s·B A x}: {@code alpha / r}, or {@code alpha / sqrt(r)} with rsLoRA.
     *
     * @return the scaling, {@code > 0}; computed in double, so it may overflow to infinity for a huge alpha (layers
     *         check it against their data type)
     */
    public double scaling() {
        return rsLora ? alpha / Math.sqrt(rank) : alpha / rank;
    }

    /**
     * The scaling an adapter of this config has at run-time {@code scale} (see {@link LoraLinear#setAdapterScale}) in a
     * layer of data type {@code type}: {@code scale·alpha / r} ({@code / sqrt(r)} with rsLoRA), bitwise the scaling
     * of a config built with {@code alpha·scale}, checked the way the layers check it. Changes nothing: use it to
     * check a scale (or, with {@code scale = 1}, a config) before changing several layers.
     *
     * @param scale the run-time scale; 1 gives {@link #scaling()}
     * @param type  the layer's data type: DOUBLE, or FLOAT (any other type is checked against FLOAT's range)
     * @return the scaling
     * @throws IllegalArgumentException unless {@code scale} is finite and the scaling a finite value of {@code type},
     *                                  naming scale, alpha, r and the scaling
     */
    public double scaling(double scale, DataType type) {
        return scaling(scale, type, "scale");
    }

    /** {@link #scaling(double, DataType)}, its refusal opening with {@code what}. */
    double scaling(double scale, DataType type, String what) {
        Objects.requireNonNull(type, "type must not be null");
        double scaled = scale * alpha;
        double s = rsLora ? scaled / Math.sqrt(rank) : scaled / rank;
        double max = type == DataType.DOUBLE ? Double.MAX_VALUE : Float.MAX_VALUE;
        if (!Double.isFinite(scale) || !(Math.abs(s) <= max)) {
            throw new IllegalArgumentException(what + ": expected a finite value giving a scaling s = scale·alpha / "
                    + (rsLora ? "sqrt(r)" : "r") + " finite in " + type + ", got scale = " + scale + " (alpha = "
                    + alpha + ", r = " + rank + ", s = " + s + ")");
        }
        return s;
    }

    @Override
    public boolean equals(Object o) {
        if (this == o) {
            return true;
        }
        if (!(o instanceof LoraConfig)) {
            return false;
        }
        LoraConfig c = (LoraConfig) o;
        return rank == c.rank && Double.compare(alpha, c.alpha) == 0 && Double.compare(dropout, c.dropout) == 0
                && rsLora == c.rsLora && useDora == c.useDora && init == c.init && seed == c.seed;
    }

    @Override
    public int hashCode() {
        return Objects.hash(rank, alpha, dropout, rsLora, useDora, init, seed);
    }

    @Override
    public String toString() {
        return "LoraConfig{rank=" + rank + ", alpha=" + alpha + ", dropout=" + dropout + ", rsLora=" + rsLora
                + (useDora ? ", useDora=true" : "") + ", init=" + init + ", seed=" + seed + ", scaling=" + scaling() + "}";
    }

    /**
     * Builds a {@link LoraConfig}. Each setter validates its argument at once and throws
     * {@link IllegalArgumentException} naming the field, the value and the allowed range, so a bad
     * value is reported where it was written.
     */
    public static final class Builder {
        private int rank = DEFAULT_RANK;
        private double alpha = DEFAULT_ALPHA;
        private double dropout = 0.0;
        private boolean rsLora = false;
        private boolean useDora = false;
        private LoraInit init = LoraInit.KAIMING_UNIFORM;
        private long seed = DEFAULT_SEED;

        private Builder() {
        }

        /**
         * Rank {@code r >= 1} (default 8).
         *
         * @param rank the rank {@code r} of every adapter built from this configuration; default
         *             {@value LoraConfig#DEFAULT_RANK}
         * @return this builder
         * @throws IllegalArgumentException if {@code rank < 1}
         */
        public Builder rank(int rank) {
            if (rank < 1) {
                throw new IllegalArgumentException("rank must be >= 1, got " + rank);
            }
            this.rank = rank;
            return this;
        }

        /**
         * {@code lora_alpha}, finite and {@code > 0} (default 8).
         *
         * @param alpha PEFT's {@code lora_alpha}; default {@value LoraConfig#DEFAULT_ALPHA}
         * @return this builder
         * @throws IllegalArgumentException if {@code alpha} is NaN, infinite or not {@code > 0}
         */
        public Builder alpha(double alpha) {
            if (!(alpha > 0) || Double.isInfinite(alpha)) {
                throw new IllegalArgumentException("alpha must be finite and > 0, got " + alpha);
            }
            this.alpha = alpha;
            return this;
        }

        /**
         * Dropout probability on the LoRA input path, in {@code [0, 1)} (default 0).
         *
         * @param dropout the probability of zeroing an element of the LoRA path's input in training mode
         * @return this builder
         * @throws IllegalArgumentException if {@code dropout} is NaN or outside {@code [0, 1)}
         */
        public Builder dropout(double dropout) {
            if (!(dropout >= 0 && dropout < 1)) {
                throw new IllegalArgumentException("dropout must be in [0, 1), got " + dropout);
            }
            this.dropout = dropout;
            return this;
        }

        /**
         * Use {@code alpha / sqrt(r)} as the scaling (default false: {@code alpha / r}).
         *
         * @param rsLora {@code true} for rank-stabilised LoRA scaling {@code alpha / sqrt(r)}
         * @return this builder
         */
        public Builder rsLora(boolean rsLora) {
            this.rsLora = rsLora;
            return this;
        }

        /**
         * DoRA (PEFT's {@code use_dora}, default false): the adapter gets a magnitude vector {@code m [out]},
         * initialised to the row norms of {@code W + s·B·A} (of {@code W}, as {@code B = 0}), and the layer computes
         * {@code y = (m / ‖W + s·B·A‖_row) ⊙ (x (W + s·B·A)^T) + b}. Only {@code LoraLinear} (and the hosts built
         * on it) accept it; embeddings and conv layers refuse it by name.
         *
         * @param useDora {@code true} for DoRA
         * @return this builder
         */
        public Builder useDora(boolean useDora) {
            this.useDora = useDora;
            return this;
        }

        /**
         * Initialisation scheme, not null (default {@link LoraInit#KAIMING_UNIFORM}).
         *
         * @param init how {@code A} and {@code B} are drawn when an adapter is added
         * @return this builder
         * @throws NullPointerException if {@code init} is {@code null}
         */
        public Builder init(LoraInit init) {
            this.init = Objects.requireNonNull(init, "init must not be null");
            return this;
        }

        /**
         * Seed of initialisation and dropout (default {@value LoraConfig#DEFAULT_SEED}).
         *
         * @param seed any value; equal seeds give equal initial {@code A}, {@code B} and dropout masks
         * @return this builder
         */
        public Builder seed(long seed) {
            this.seed = seed;
            return this;
        }

        /**
         * The validated, immutable configuration.
         *
         * @return a new configuration with the values set so far (each was validated by its setter); the builder may be
         *         reused
         */
        public LoraConfig build() {
            return new LoraConfig(this);
        }
    }

    /**
     * The initial {@code {A [r, in], B [out, r]}} that {@link LoraLinear#wrap} and {@link LoraLinear#addAdapter} draw
     * for this configuration ({@code B = 0}, {@code A} per {@link #init()}, deterministic from {@link #seed()}), without
     * building a layer: for hosts that keep {@code A} and {@code B} in their own parameter arrays, so that they start
     * where lora-core's layer would.
     *
     * @param in   input features (the layer's {@code in})
     * @param out  output features
     * @param type the weight's data type, FLOAT or DOUBLE
     * @return new arrays {@code {A, B}} of {@code type}
     * @throws NullPointerException     if {@code type} is null
     * @throws IllegalArgumentException if a size is below 1 or the scaling is not a finite value of {@code type} (any
     *                                  rank {@code >= 1} is accepted, above {@code min(in, out)} too, as in PEFT)
     */
    public INDArray[] initialWeights(long in, long out, DataType type) {
        Objects.requireNonNull(type, "type must not be null");
        Checks.checkNewAdapter(LoraLinear.DEFAULT_ADAPTER, this, in, out, type);
        return AdapterSet.initialWeights(this, in, out, type);
    }
}
