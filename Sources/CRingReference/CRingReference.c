#include "CRingReference.h"
