package io.github.lora4j.dl4j;

import io.github.lora4j.LoraConfig;
import io.github.lora4j.LoraInit;
import java.io.Serializable;
import java.util.Objects;

/**
 * The {@link LoraConfig} of one LoRA layer in the form DL4J's JSON configuration stores: a bean with a no-argument
 * constructor, getters and setters, so that {@code ModelSerializer} and {@code MultiLayerConfiguration.toJson()}
 * round-trip it. Convert with {@link #of(LoraConfig)} and {@link #toConfig()}; the conversion validates, as
 * {@link LoraConfig.Builder} does.
 */
public final class LoraSettings implements Serializable {

    private static final long serialVersionUID = 1L;

    /** Rank {@code r}. */
    private int rank = LoraConfig.DEFAULT_RANK;
    /** PEFT's {@code lora_alpha}. */
    private double alpha = LoraConfig.DEFAULT_ALPHA;
    /** Dropout on the LoRA path's input, in training only (PEFT's {@code lora_dropout}). */
    private double dropout;
    /** Whether the scaling is {@code alpha / sqrt(r)}. */
    private boolean rsLora;
    /** Whether the adapter is DoRA (PEFT's {@code use_dora}): a trainable magnitude per output feature. */
    private boolean useDora;
    /** The initialisation scheme. */
    private LoraInit init = LoraInit.KAIMING_UNIFORM;
    /** Seed of the initialisation. */
    private long seed = LoraConfig.DEFAULT_SEED;

    /** The defaults of {@link LoraConfig#defaults()}; for JSON. */
    public LoraSettings() {
    }

    /**
     * The settings of {@code config}.
     *
     * @param config the configuration to store
     * @return new settings holding its rank, alpha, dropout, rsLoRA flag, init and seed
     * @throws NullPointerException if {@code config} is null
     */
    public static LoraSettings of(LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        LoraSettings s = new LoraSettings();
        s.rank = config.rank();
        s.alpha = config.alpha();
        s.dropout = config.dropout();
        s.rsLora = config.rsLora();
        s.useDora = config.useDora();
        s.init = config.init();
        s.seed = config.seed();
        return s;
    }

    /**
     * The configuration these settings describe.
     *
     * @return a new, validated {@link LoraConfig}
     * @throws IllegalArgumentException if a setter stored a value {@link LoraConfig.Builder} refuses (e.g. a rank
     *                                  below 1 or a dropout of 1 read from a hand-edited JSON file)
     */
    public LoraConfig toConfig() {
        return LoraConfig.builder().rank(rank).alpha(alpha).dropout(dropout).rsLora(rsLora).useDora(useDora).init(init)
                .seed(seed)
                .build();
    }

    /**
     * Rank {@code r}: {@code loraA} is {@code [r, nIn]}, {@code loraB} {@code [nOut, r]}.
     *
     * @return the stored rank
     */
    public int getRank() {
        return rank;
    }

    /** @param rank rank {@code r >= 1} */
    public void setRank(int rank) {
        this.rank = rank;
    }

    /**
     * PEFT's {@code lora_alpha}.
     *
     * @return the stored alpha
     */
    public double getAlpha() {
        return alpha;
    }

    /** @param alpha PEFT's {@code lora_alpha}, finite and positive */
    public void setAlpha(double alpha) {
        this.alpha = alpha;
    }

    /**
     * Dropout on the LoRA path's input in training ({@code B(A(dropout(x)))}, PEFT's {@code lora_dropout}); the base
     * path {@code x W + b} sees {@code x} undropped. Networks saved without it read it as 0.
     *
     * @return the stored probability
     */
    public double getDropout() {
        return dropout;
    }

    /** @param dropout probability in {@code [0, 1)} */
    public void setDropout(double dropout) {
        this.dropout = dropout;
    }

    /**
     * Whether the scaling is {@code alpha / sqrt(r)} instead of {@code alpha / r}.
     *
     * @return the stored rsLoRA flag
     */
    public boolean isRsLora() {
        return rsLora;
    }

    /** @param rsLora use {@code alpha / sqrt(r)} as the scaling */
    public void setRsLora(boolean rsLora) {
        this.rsLora = rsLora;
    }

    /**
     * Whether the adapter is DoRA (PEFT's {@code use_dora}): the layer then has the trainable magnitude
     * {@code loraMagnitude [nOut]} and computes {@code (m / ‖W + s·B·A‖) ⊙ (x W + s·(x Aᵀ) Bᵀ) + b}. Networks saved
     * without it read it as false.
     *
     * @return the stored DoRA flag
     */
    public boolean isUseDora() {
        return useDora;
    }

    /** @param useDora whether the adapter is DoRA */
    public void setUseDora(boolean useDora) {
        this.useDora = useDora;
    }

    /**
     * How {@code loraA} and {@code loraB} are initialised when the network initialises its parameters.
     *
     * @return the stored scheme
     */
    public LoraInit getInit() {
        return init;
    }

    /** @param init initialisation scheme, not null */
    public void setInit(LoraInit init) {
        this.init = init;
    }

    /**
     * Seed of the initialisation (mixed with the layer name, so equal-shaped layers differ).
     *
     * @return the stored seed
     */
    public long getSeed() {
        return seed;
    }

    /** @param seed seed of the initialisation */
    public void setSeed(long seed) {
        this.seed = seed;
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof LoraSettings && toConfig().equals(((LoraSettings) o).toConfig());
    }

    @Override
    public int hashCode() {
        return toConfig().hashCode();
    }

    @Override
    public String toString() {
        return "LoraSettings{rank=" + rank + ", alpha=" + alpha + ", dropout=" + dropout + ", rsLora=" + rsLora
                + (useDora ? ", useDora=true" : "") + ", init=" + init + ", seed="
                + seed + "}";
    }
}
