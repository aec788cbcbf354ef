package io.github.lora4j.spark;

import java.util.Map;
import org.nd4j.linalg.api.ndarray.INDArray;
import org.nd4j.linalg.learning.GradientUpdater;
import org.nd4j.linalg.learning.config.Adam;

/**
 * Adam whose update of iteration {@code failAt} changes its state and then throws: a driver-side update that fails
 * half-way (out of memory, a bug in a custom updater), which must not leave the network half-updated.
 */
public class FailingAdam extends Adam {

    private static final long serialVersionUID = 1L;

    private int failAt;

    /** For JSON. */
    public FailingAdam() {
    }

    FailingAdam(double lr, int failAt) {
        super(lr);
        this.failAt = failAt;
    }

    @Override
    @SuppressWarnings({"rawtypes", "unchecked"})
    public GradientUpdater instantiate(INDArray viewArray, boolean initializeViewArray) {
        GradientUpdater adam = super.instantiate(viewArray, initializeViewArray);
        int at = failAt;
        return new GradientUpdater() {
            @Override
            public org.nd4j.linalg.learning.config.IUpdater getConfig() {
                return FailingAdam.this;
            }

            @Override
            public void setState(Map stateMap, boolean initialize) {
                adam.setState(stateMap, initialize);
            }

            @Override
            public Map getState() {
                return adam.getState();
            }

            @Override
            public void setStateViewArray(INDArray viewArray, long[] gradientShape, char gradientOrder,
                    boolean initialize) {
                adam.setStateViewArray(viewArray, gradientShape, gradientOrder, initialize);
            }

            @Override
            public void applyUpdater(INDArray gradient, int iteration, int epoch) {
                adam.applyUpdater(gradient, iteration, epoch);  // state (m, v) and the gradient changed...
                if (iteration == at) {
                    throw new IllegalStateException("FailingAdam: failing at iteration " + iteration);  // ...then
                }
            }
        };
    }

    @Override
    public FailingAdam clone() {
        return new FailingAdam(getLearningRate(), failAt);
    }

    @Override
    public boolean equals(Object o) {
        return o instanceof FailingAdam f && f.failAt == failAt && super.equals(o);
    }

    @Override
    public int hashCode() {
        return super.hashCode() * 31 + failAt;
    }
}
