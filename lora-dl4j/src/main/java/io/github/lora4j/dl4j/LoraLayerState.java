package io.github.lora4j.dl4j;

import java.io.Serializable;
import java.util.Objects;
import org.deeplearning4j.nn.conf.layers.Layer;

/**
 * What a LoRA layer configuration adds to DL4J's: the layer it replaces, the adapter settings and whether the adapter
 * is merged. A bean for DL4J's JSON (Jackson), saved with the network.
 */
public final class LoraLayerState implements Serializable {

    private static final long serialVersionUID = 1L;

    /** The replaced DL4J layer configuration. */
    private Layer base;
    /** The adapter settings, or null for a frozen layer without adapter. */
    private LoraSettings lora;
    /** Whether {@code W} holds the adapter's update. */
    private boolean merged;

    /** For JSON. */
    public LoraLayerState() {
    }

    /**
     * @param base the replaced DL4J layer configuration; copied
     * @param lora the adapter settings, or null for a frozen layer without adapter; copied, so that layers made from
     *             one settings object do not share it (loading an adapter changes one layer's alpha)
     */
    public LoraLayerState(Layer base, LoraSettings lora) {
        this.base = Objects.requireNonNull(base, "base must not be null").clone();
        this.lora = lora == null ? null : LoraSettings.of(lora.toConfig());
    }

    /**
     * The replaced DL4J layer configuration.
     *
     * @return the {@code DenseLayer}, {@code OutputLayer} or {@code RnnOutputLayer} configuration held here (not a copy)
     */
    public Layer getBase() {
        return base;
    }

    /** @param base the replaced layer configuration (for JSON) */
    public void setBase(Layer base) {
        this.base = base;
    }

    /**
     * The adapter settings.
     *
     * @return the settings held here (not a copy), or null for a frozen layer without adapter
     */
    public LoraSettings getLora() {
        return lora;
    }

    /** @param lora the adapter settings, or null (for JSON) */
    public void setLora(LoraSettings lora) {
        this.lora = lora;
    }

    /**
     * Whether {@code W} holds {@code W + s·(B A)ᵀ}.
     *
     * @return the recorded merge state
     */
    public boolean isMerged() {
        return merged;
    }

    /** @param merged set by {@link LoraDl4j#merge}/{@link LoraDl4j#unmerge} (and JSON) only */
    public void setMerged(boolean merged) {
        this.merged = merged;
    }

    /**
     * A deep copy.
     *
     * @return a new state with a cloned base configuration and equal, separate settings
     */
    public LoraLayerState copy() {
        LoraLayerState c = new LoraLayerState();
        c.base = base == null ? null : base.clone();
        c.lora = lora == null ? null : LoraSettings.of(lora.toConfig());
        c.merged = merged;
        return c;
    }

    @Override
    public boolean equals(Object o) {
        if (!(o instanceof LoraLayerState)) {
            return false;
        }
        LoraLayerState s = (LoraLayerState) o;
        return merged == s.merged && Objects.equals(base, s.base) && Objects.equals(lora, s.lora);
    }

    @Override
    public int hashCode() {
        return Objects.hash(base, lora, merged);
    }
}
