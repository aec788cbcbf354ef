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
    /** Whether the scaling is {@code alpha / sqrt(r)}. */
    private boolean rsLora;
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
     * @param config the configuration to store; its dropout must be 0
     * @return new settings holding its rank, alpha, rsLoRA flag, init and seed
     * @throws NullPointerException     if {@code config} is null
     * @throws IllegalArgumentException if {@code config.dropout() > 0}: DL4J layers take their input dropout from
     *                                  the layer's own {@code dropOut(...)}; a LoRA-path-only dropout is not
     *                                  supported in lora-dl4j
     */
    public static LoraSettings of(LoraConfig config) {
        Objects.requireNonNull(config, "config must not be null");
        if (config.dropout() != 0) {
            throw new IllegalArgumentException("lora-dl4j supports LoRA dropout 0 only (the layer's own dropOut(...) "
                    + "acts on the whole input), got dropout " + config.dropout());
        }
        LoraSettings s = new LoraSettings();
        s.rank = config.rank();
        s.alpha = config.alpha();
        s.rsLora = config.rsLora();
        s.init = config.init();
        s.seed = config.seed();
        return s;
    }

    /**
     * The configuration these settings describe.
     *
     * @return a new, validated {@link LoraConfig} with dropout 0
     * @throws IllegalArgumentException if a setter stored a value {@link LoraConfig.Builder} refuses (e.g. a rank
     *                                  below 1 read from a hand-edited JSON file)
     */
    public LoraConfig toConfig() {
        return LoraConfig.builder().rank(rank).alpha(alpha).rsLora(rsLora).init(init).seed(seed).build();
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
        return "LoraSettings{rank=" + rank + ", alpha=" + alpha + ", rsLora=" + rsLora + ", init=" + init + ", seed="
                + seed + "}";
    }
}
